"""The run graph's SVG body, written in Python: a large run's graph has about 120 nodes of ~25
values each, which the template engine took most of the run page's time to draw."""

from __future__ import annotations

from django import template
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe
from django.utils.text import Truncator

register = template.Library()


def _edge(edge: dict) -> SafeString:
    """Return one edge: a curve from a node's right side to its successor's left side."""
    return format_html(
        '<path class="edge{}" d="M {} {} C {} {}, {} {}, {} {}" marker-end="url(#arrow)"/>',
        " done" if edge["done"] else "",
        edge["x1"],
        edge["y1"],
        edge["mid"],
        edge["y1"],
        edge["mid"],
        edge["y2"],
        edge["x2"],
        edge["y2"],
    )


def _folded(node, width: int, height: int) -> SafeString:
    """Return a node standing for steps not drawn (it links to the steps list)."""
    failed = format_html(", {} failed", node.folded_failed) if node.folded_failed else ""
    return format_html(
        '\n  <a href="#steps-title" class="node-link more">'
        '<g class="node more state-{}" id="node-more-{}">\n'
        "    <title>{} more steps: {}</title>\n"
        '    <rect x="{}" y="{}" width="{}" height="{}" rx="8" stroke-dasharray="4 3"/>\n'
        '    <text x="{}" y="{}" class="node-id">+{} more steps</text>\n'
        '    <text x="{}" y="{}" class="node-sub">{}/{} done{}</text>\n'
        "  </g></a>\n  ",
        node.status,
        node.layer,
        node.hidden,
        node.folded_summary,
        node.x,
        node.y,
        width,
        height,
        node.x + 10,
        node.y + 20,
        node.hidden,
        node.x + 10,
        node.y + 36,
        node.folded_done,
        node.hidden,
        failed,
    )


def _step(node, width: int, height: int) -> SafeString:
    """Return a step's node: its id, type and state; a link to its panel once it has a row."""
    attempt = format_html(", attempt {}", node.attempt) if node.attempt > 1 else ""
    try_again = format_html(" · try {}", node.attempt) if node.attempt > 1 else ""
    items = ""
    if node.folded_total:
        failed = format_html(", {} failed", node.folded_failed) if node.folded_failed else ""
        items = format_html(
            '<text x="{}" y="{}" class="node-sub folded">{}/{} items done{}</text>',
            node.x + 10,
            node.y + 49,
            node.folded_done,
            node.folded_total,
            failed,
        )
    body = format_html(
        '\n  <g class="node state-{}" id="node-{}">\n'
        "    <title>{} ({}): {}{}</title>\n"
        '    <rect x="{}" y="{}" width="{}" height="{}" rx="8"/>\n'
        '    <text x="{}" y="{}" class="node-id">{}</text>\n'
        '    <text x="{}" y="{}" class="node-sub">{} · {}{}</text>\n'
        "    {}\n  </g>\n  ",
        node.status,
        node.id,
        node.id,
        node.type,
        node.status,
        attempt,
        node.x,
        node.y,
        width,
        height,
        node.x + 10,
        node.y + 20,
        Truncator(node.id).chars(20),
        node.x + 10,
        node.y + 36,
        node.type,
        node.status,
        try_again,
        items,
    )
    if not node.step_pk:
        return format_html("\n  {}", body)
    return format_html(
        '\n  <a href="{}" hx-get="{}" hx-target="#step-panel" class="node-link" data-step="{}">'
        "{}</a>\n  ",
        node.url,
        node.url,
        node.step_pk,
        body,
    )


@register.simple_tag
def graph_shapes(graph: dict) -> SafeString:
    """Return the graph's edges and nodes (inspector.graph's geometry) as SVG elements."""
    width, height = graph["node_w"], graph["node_h"]
    edges = format_html_join("", "{}", ((_edge(edge),) for edge in graph["edges"]))
    nodes = mark_safe(
        "".join(
            _folded(node, width, height) if node.hidden else _step(node, width, height)
            for node in graph["nodes"]
        )
    )
    return format_html("{}{}", edges, nodes)
