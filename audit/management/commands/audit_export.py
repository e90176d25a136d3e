"""Write an evidence bundle for chosen entries, checked offline by scripts/verify_evidence.py."""

from django.core.management.base import BaseCommand, CommandError

from audit.export import (
    ExportError,
    build_bundle,
    dump_bundle,
    entry_ids_to_seqs,
    read_checkpoint_file,
)
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
        parser.add_argument(
            "--since-checkpoint",
            metavar="FILE",
            help="An older checkpoint kept outside the database (JSON, or a bundle holding one): "
            "the bundle then also proves that its checkpoint extends it (a consistency proof).",
        )

    def handle(self, *args, seq, entry, run, action, limit, output, since_checkpoint, **options):
        entry_ids = list(entry)
        if run or action:
            chosen = search_entries(AuditFilter(run_id=run, action=action))
            entry_ids += list(chosen.values_list("id", flat=True)[:limit])
        try:
            since = read_checkpoint_file(since_checkpoint) if since_checkpoint else None
            seqs = list(seq) + (entry_ids_to_seqs(entry_ids) if entry_ids else [])
            bundle = build_bundle(seqs, since=since)
        except ExportError as exc:
            raise CommandError(str(exc)) from exc
        text = dump_bundle(bundle)
        if output == "-":
            self.stdout.write(text, ending="")
        else:
            with open(output, "w") as handle:
                handle.write(text)
            proof = bundle.get("consistency")
            extends = (
                f", proven to extend size {proof['old_checkpoint']['tree_size']}" if proof else ""
            )
            self.stderr.write(
                f"wrote {len(bundle['entries'])} entries, checkpoint at size "
                f"{bundle['checkpoint']['tree_size']}{extends}, to {output}"
            )
