"""The orchestrator's API endpoints: workflows, versions, runs, their history and signals.

Views stay thin: lists come from restrict(), single objects and every write from the services,
which authorise (404 hidden, 403 forbidden) and audit their refusals.
"""

from __future__ import annotations

from django.urls import reverse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.response import Response
from rest_framework.views import APIView

from audit.api import serializers as audit_serializers
from audit.api.pagination import CursorPagination
from audit.api.schema import problems
from audit.api.views import evidence_response
from orchestrator import services
from orchestrator.api import serializers as s
from orchestrator.api.idempotency import PARAMETER as IDEMPOTENCY_KEY
from orchestrator.api.idempotency import idempotent
from orchestrator.filters import RunFilter, WorkflowFilter
from orchestrator.models import RunEvent, VersionStatus, Workflow, WorkflowRun, WorkflowVersion


class _BySlug(CursorPagination):
    ordering = "slug"


class _ByNumber(CursorPagination):
    ordering = "-number"


class _Newest(CursorPagination):
    ordering = ("-created_at", "-id")


class _InOrder(CursorPagination):
    ordering = "id"


def _run_location(run) -> str:
    return reverse("api-run", kwargs={"pk": run.pk})


# --- workflows -----------------------------------------------------------------------------------


class WorkflowListView(generics.ListAPIView):
    """The workflows the caller may see."""

    serializer_class = s.WorkflowSerializer
    pagination_class = _BySlug
    filterset_class = WorkflowFilter

    def get_queryset(self):
        return Workflow.objects.restrict(self.request.user, "view").select_related("live_version")

    @extend_schema(summary="List workflows", responses={200: s.WorkflowSerializer, **problems()})
    def get(self, request, *args, **kwargs):
        """Return a page of the workflows the caller may see, by slug."""
        return super().get(request, *args, **kwargs)


class WorkflowDetailView(APIView):
    """One workflow."""

    @extend_schema(
        summary="Read a workflow", responses={200: s.WorkflowSerializer, **problems(404)}
    )
    def get(self, request, slug):
        """Return the workflow with this slug."""
        workflow = services.get_workflow(slug, actor=request.user)
        return Response(s.WorkflowSerializer(workflow).data)


class VersionListView(generics.ListAPIView):
    """A workflow's versions, newest first; and publishing the next one."""

    serializer_class = s.VersionSerializer
    pagination_class = _ByNumber
    queryset = WorkflowVersion.objects.none()  # for the schema; get_queryset() answers

    def get_queryset(self):
        workflow = services.get_workflow(self.kwargs["slug"], actor=self.request.user)
        return (
            WorkflowVersion.objects.restrict(self.request.user, "view")
            .filter(workflow=workflow)
            .select_related("workflow", "base_version")
        )

    @extend_schema(
        summary="List a workflow's versions",
        responses={200: s.VersionSerializer, **problems(404)},
    )
    def get(self, request, *args, **kwargs):
        """Return a page of the workflow's versions, newest first."""
        return super().get(request, *args, **kwargs)

    @extend_schema(
        summary="Publish a workflow version",
        description="Validates the definition (problems name the step and field, in `errors` "
        "keyed `definition.steps.<step>.<field>`) and publishes it as the next version. Where "
        "the workflow needs no approval it is live at once: 201 with status `approved`. Where it "
        "needs a second person's approval it is proposed: 202 with status `proposed` and the "
        "approval request's id; it goes live once approved.",
        request=s.PublishSerializer,
        responses={
            201: OpenApiResponse(s.VersionDetailSerializer, description="Published, live."),
            202: OpenApiResponse(s.VersionDetailSerializer, description="Proposed for approval."),
            **problems(400, 403, 404, 409, 422),
        },
    )
    def post(self, request, slug):
        """Publish (or propose) a definition as the workflow's next version."""
        body = s.PublishSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        workflow = services.get_workflow(slug, actor=request.user)
        version = services.publish_version(
            workflow,
            body.validated_data["definition"],
            actor=request.user,
            note=body.validated_data["note"],
        )
        code = (
            status.HTTP_201_CREATED
            if version.status == VersionStatus.APPROVED
            else status.HTTP_202_ACCEPTED
        )
        location = reverse("api-workflow-version", kwargs={"slug": slug, "number": version.number})
        return Response(
            s.VersionDetailSerializer(version).data, status=code, headers={"Location": location}
        )


class VersionDetailView(APIView):
    """One version of a workflow, with its definition."""

    @extend_schema(
        summary="Read a workflow version",
        responses={200: s.VersionDetailSerializer, **problems(404)},
    )
    def get(self, request, slug, number):
        """Return the version with its definition, status and digest."""
        workflow = services.get_workflow(slug, actor=request.user)
        version = services.get_version(workflow, number, actor=request.user)
        return Response(s.VersionDetailSerializer(version).data)


class WorkflowSignalView(APIView):
    """Signals by correlation: to the open run of a workflow that holds a business key."""

    @extend_schema(
        summary="Signal a run by business key",
        description="Sends the signal to the open (running or paused) run of this workflow "
        "holding the business key; 404 when there is none. Reserved names (`approval:`, "
        "`escalation:`, `children:`) are refused with 409.",
        request=s.CorrelatedSignalSerializer,
        parameters=[IDEMPOTENCY_KEY],
        responses={202: s.SentSignalSerializer, **problems(400, 403, 404, 409, 422)},
    )
    @idempotent
    def post(self, request, slug):
        """Send a named signal to the open run with this business key."""
        body = s.CorrelatedSignalSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        signal = services.signal_by_business_key(
            slug,
            body.validated_data["business_key"],
            body.validated_data["name"],
            body.validated_data["payload"],
            sent_by=request.user,
        )
        return Response(s.SentSignalSerializer(signal).data, status=status.HTTP_202_ACCEPTED)


# --- runs ----------------------------------------------------------------------------------------


class RunListView(generics.ListAPIView):
    """The runs the caller may see, newest first; and starting one."""

    serializer_class = s.RunSerializer
    pagination_class = _Newest
    filterset_class = RunFilter

    def get_queryset(self):
        return WorkflowRun.objects.restrict(self.request.user, "view").select_related(
            "workflow", "version"
        )

    @extend_schema(summary="List runs", responses={200: s.RunSerializer, **problems(400)})
    def get(self, request, *args, **kwargs):
        """Return a page of runs, filtered, newest first."""
        return super().get(request, *args, **kwargs)

    @extend_schema(
        summary="Start a run",
        description="Starts a run of the workflow's live version with the input (validated "
        "against the workflow's input schema: 422 with `errors`). With a business key, at most "
        "one open run of the workflow holds it: another start is refused with 409 naming that "
        "run (`business_key_policy: fail`, the default) or answered 200 with it "
        "(`use_existing`). `signal` is delivered to the run in the same transaction "
        "(signal-with-start), to the new run or the existing one.",
        request=s.StartRunSerializer,
        parameters=[IDEMPOTENCY_KEY],
        responses={
            201: OpenApiResponse(s.RunSerializer, description="Started."),
            200: OpenApiResponse(s.RunSerializer, description="The open run with the key."),
            **problems(400, 403, 404, 409, 422),
        },
    )
    @idempotent
    def post(self, request):
        """Start a run, or (use_existing) meet the open one holding the business key."""
        body = s.StartRunSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        signal = (data["signal"]["name"], data["signal"]["payload"]) if data["signal"] else None
        run, started = services.start_or_signal(
            data["workflow"],
            data["input"],
            started_by=request.user,
            business_key=data["business_key"],
            business_key_policy=data["business_key_policy"],
            signal=signal,
            trigger="api",
            request_id=getattr(request, "request_id", ""),
        )
        return Response(
            s.RunSerializer(run).data,
            status=status.HTTP_201_CREATED if started else status.HTTP_200_OK,
            headers={"Location": _run_location(run)},
        )


class RunDetailView(APIView):
    """One run with its steps."""

    @extend_schema(summary="Read a run", responses={200: s.RunDetailSerializer, **problems(404)})
    def get(self, request, pk):
        """Return the run, its input, outcome and steps."""
        run = services.get_run(pk, actor=request.user)
        return Response(s.RunDetailSerializer(run).data)


class RunEventsView(generics.ListAPIView):
    """A run's history, oldest first."""

    serializer_class = s.EventSerializer
    pagination_class = _InOrder
    queryset = RunEvent.objects.none()  # for the schema; get_queryset() answers

    def get_queryset(self):
        run = services.get_run(self.kwargs["pk"], actor=self.request.user)
        return RunEvent.objects.restrict(self.request.user, "view").filter(run=run)

    @extend_schema(
        summary="List a run's events", responses={200: s.EventSerializer, **problems(404)}
    )
    def get(self, request, *args, **kwargs):
        """Return a page of the run's history, oldest first."""
        return super().get(request, *args, **kwargs)


class RunEvidenceView(APIView):
    """A run's evidence bundle, as the audit API builds it, for a run the caller may see."""

    @extend_schema(
        summary="Download a run's evidence bundle",
        description="The audit API's `steward-evidence/1` bundle (`GET /api/v1/audit/evidence"
        "?run=<id>`) of this run: 404 for a run the caller may not see, or whose entries the "
        "caller may not read; 409 while no signed checkpoint covers them.",
        responses={200: audit_serializers.EvidenceBundleSerializer, **problems(404, 409)},
    )
    def get(self, request, pk):
        """Return the bundle of the run's audit entries as a JSON attachment."""
        run = services.get_run(pk, actor=request.user)
        return evidence_response(request, str(run.pk))


_RUN_WRITE = {200: s.RunSerializer, **problems(403, 404, 409)}


class RunCancelView(APIView):
    """Cancel a run."""

    @extend_schema(summary="Cancel a run", request=s.CancelSerializer, responses=_RUN_WRITE)
    def post(self, request, pk):
        """Cancel the run, with a reason."""
        body = s.CancelSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        run = services.cancel_run(pk, actor=request.user, reason=body.validated_data["reason"])
        return Response(s.RunSerializer(run).data)


class RunPauseView(APIView):
    """Pause a run."""

    @extend_schema(summary="Pause a run", request=None, responses=_RUN_WRITE)
    def post(self, request, pk):
        """Pause the running run."""
        return Response(s.RunSerializer(services.pause_run(pk, actor=request.user)).data)


class RunResumeView(APIView):
    """Resume a paused run."""

    @extend_schema(summary="Resume a run", request=None, responses=_RUN_WRITE)
    def post(self, request, pk):
        """Resume the paused run."""
        return Response(s.RunSerializer(services.resume_run(pk, actor=request.user)).data)


class StepRetryView(APIView):
    """Retry a failed step of a run."""

    @extend_schema(
        summary="Retry a failed step",
        request=None,
        responses={200: s.StepSerializer, **problems(403, 404, 409)},
    )
    def post(self, request, pk, step_pk):
        """Retry the failed step; its failed run resumes."""
        step = services.retry_step(step_pk, actor=request.user, run=pk)
        return Response(s.StepSerializer(step).data)


class RunSignalView(APIView):
    """Signals to one run."""

    @extend_schema(
        summary="Signal a run",
        description="Sends a named signal; the step waiting for it (now or later) takes it. A "
        "finished run, or a reserved name (`approval:`, `escalation:`, `children:`), is "
        "refused with 409.",
        request=s.SignalSerializer,
        parameters=[IDEMPOTENCY_KEY],
        responses={202: s.SentSignalSerializer, **problems(400, 403, 404, 409, 422)},
    )
    @idempotent
    def post(self, request, pk):
        """Send a named signal to the run."""
        body = s.SignalSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        signal = services.send_signal(
            pk, body.validated_data["name"], body.validated_data["payload"], sent_by=request.user
        )
        return Response(s.SentSignalSerializer(signal).data, status=status.HTTP_202_ACCEPTED)
