"""Write an evidence bundle for chosen entries, checked offline by scripts/verify_evidence.py."""

from django.core.management.base import BaseCommand, CommandError

from audit.export import ExportError, build_bundle, dump_bundle, entry_ids_to_seqs
from audit.queries import AuditFilter, search_entries


class Command(BaseCommand):
    help = "Export an evidence bundle: entries, their inclusion proofs, a checkpoint, the key."

    def add_arguments(self, parser):
        parser.add_argument("--seq", type=int, action="append", default=[], help="Sequence no.")
        parser.add_argument("--entry", type=int, action="append", default=[], help="Entry id.")
        parser.add_argument("--run", default="", help="Every entry of this run id.")
        parser.add_argument("--action", default="", help="Every entry of this action.")
        parser.add_argument("--limit", type=int, default=10000)
        parser.add_argument("-o", "--output", default="-", help="File to write (default stdout).")

    def handle(self, *args, seq, entry, run, action, limit, output, **options):
        entry_ids = list(entry)
        if run or action:
            chosen = search_entries(AuditFilter(run_id=run, action=action))
            entry_ids += list(chosen.values_list("id", flat=True)[:limit])
        try:
            seqs = list(seq) + (entry_ids_to_seqs(entry_ids) if entry_ids else [])
            bundle = build_bundle(seqs)
        except ExportError as exc:
            raise CommandError(str(exc)) from exc
        text = dump_bundle(bundle)
        if output == "-":
            self.stdout.write(text, ending="")
        else:
            with open(output, "w") as handle:
                handle.write(text)
            self.stderr.write(
                f"wrote {len(bundle['entries'])} entries, checkpoint at size "
                f"{bundle['checkpoint']['tree_size']}, to {output}"
            )
