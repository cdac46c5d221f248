"""The Go template evaluator against outputs recorded from Podman 4.3 on this machine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rootless import gotemplate as g

RECORDED = json.loads((Path(__file__).parent / "data" / "gotemplate_podman.json").read_text())


@pytest.mark.parametrize("case", RECORDED["cases"], ids=lambda c: c["template"])
def test_recorded_from_podman(case: dict[str, Any]) -> None:
    """Every (template, output) pair Podman printed for the same data; an error where Podman
    failed, one line naming the template and a position."""
    if "stdout" in case:
        assert g.render_one("inspect", case["template"], RECORDED["data"]) == case["stdout"]
    else:
        with pytest.raises(g.TemplateError) as e:
            g.render_one("inspect", case["template"], RECORDED["data"])
        assert e.value.message.startswith("template: inspect:1")
        assert "\n" not in e.value.message
        want = case["error"]
        # Podman wraps the template in {{range}}, so only the message after the position is compared
        if "executing" in want:
            assert e.value.message.split(": ", 2)[2].split(": ", 1)[1].split(" in type")[0] in want
        else:
            assert want.split(": ", 2)[2] in e.value.message or "unclosed action" in e.value.message


# `podman ps -a --format ...` on two created containers (c1 with labels k=v and z=2)
PS_ROWS = [{"ID": "102a7c480572", "Image": "localhost/bb:latest", "Names": "c1", "Status": "Created",
            "State": "created", "Labels": {"a": "1", "k": "v", "org.x": "hello", "z": "2"}},
           {"ID": "3aa29c19ed49", "Image": "localhost/bb:latest", "Names": "c2", "Status": "Created",
            "State": "created", "Labels": {"a": "1", "org.x": "hello"}}]
PS_HEADERS = {"ID": "CONTAINER ID"}

TABLES = [
    ("{{.ID}}\\t{{.Names}}", "102a7c480572\tc1\n3aa29c19ed49\tc2\n"),
    ("table {{.ID}}\\t{{.Names}}\\t{{.Labels}}",
     "CONTAINER ID  NAMES       LABELS\n"
     "102a7c480572  c1          map[a:1 k:v org.x:hello z:2]\n"
     "3aa29c19ed49  c2          map[a:1 org.x:hello]\n"),
    ("table {{.Names}} {{.Status}}", "NAMES       STATUS\nc1          Created\nc2          Created\n"),
    ("table {{.ID}} {{.Image}} {{.Names}}\\t{{.Status}}",
     "CONTAINER ID  IMAGE                NAMES       STATUS\n"
     "102a7c480572  localhost/bb:latest  c1          Created\n"
     "3aa29c19ed49  localhost/bb:latest  c2          Created\n"),
    ("table {{.Names}}\\t{{upper .State}} {{json .Labels}}",
     'NAMES       STATE       "LABELS"\n'
     'c1          CREATED     {"a":"1","k":"v","org.x":"hello","z":"2"}\n'
     'c2          CREATED     {"a":"1","org.x":"hello"}\n'),
]


@pytest.mark.parametrize(("fmt", "want"), TABLES)
def test_ps_tables_recorded_from_podman(fmt: str, want: str) -> None:
    assert g.render("ps", fmt, PS_ROWS, PS_HEADERS) == want


def test_images_table_headers() -> None:
    rows = [{"Repository": "localhost/bb", "Tag": "latest", "ID": "41db7aa3203b", "Size": "1.99 MB"}]
    assert g.render("images", "table {{.Repository}}:{{.Tag}}\\t{{.ID}}\\t{{.Size}}", rows,
                    {"ID": "IMAGE ID"}) == (
        "REPOSITORY:TAG       IMAGE ID      SIZE\nlocalhost/bb:latest  41db7aa3203b  1.99 MB\n")
    assert g.render("images", "{{.Repository}}\\n{{.Tag}}", rows) == "localhost/bb\nlatest\n"


@pytest.mark.parametrize(("field", "header"), [("CreatedAt", "CREATED AT"), ("ImageID", "IMAGE ID"),
                                               ("ID", "ID"), ("Names", "NAMES"), ("ExitCode", "EXIT CODE"),
                                               ("RunningFor", "RUNNING FOR"), ("OsArch", "OS ARCH")])
def test_header_names(field: str, header: str) -> None:
    assert g.header_name(field) == header


def test_nested_field_header_falls_back_to_the_last_name() -> None:
    rows = [{"State": {"Pid": 7}}]
    assert g.render("inspect", "table {{.State.Pid}}", rows) == "PID\n7\n"


@pytest.mark.parametrize(("tmpl", "data", "want"), [
    ("{{.A}}", {"A": 1.5}, "1.5"), ("{{.A}}", {"A": 1234567.0}, "1.234567e+06"), ("{{.A}}", {"A": 0.0001}, "0.0001"),
    ("{{.A}}", {"A": None}, "<nil>"), ("{{.A}}", {"A": [1, "x", [2]]}, "[1 x [2]]"),
    ("{{.A.b}}", {"A": {"b": {"Z": 1, "A": 2}}}, "map[A:2 Z:1]"),
    ("{{range $i, $v := .}}{{if $i}},{{end}}{{$v}}{{end}}", ["a", "b", "c"], "a,b,c"),
    ("{{range .}}{{if eq . 2}}{{continue}}{{end}}{{.}}{{end}}", [1, 2, 3], "13"),
    ("{{with $x := .A}}{{$x}}{{end}}", {"A": "v"}, "v"),
    ("{{if .A}}a{{else if .B}}b{{else}}c{{end}}", {"A": 0, "B": ""}, "c"),
    ("{{.A}}", {"a": 1}, "<no value>"),
    ("{{printf \"%-6s|%6.2f|%3d|%q\" .S .F .I .S}}", {"S": "ab", "F": 2.5, "I": 7}, 'ab    |  2.50|  7|"ab"'),
    ("{{printf \"%v\" .}}", {"b": True, "a": None}, "map[a:<nil> b:true]"),
    ("{{len .}}", "héllo", "6"),  # bytes, as Go counts
    ("{{title .}}", "hello-world foo_bar", "Hello-World Foo_bar"),
    ("{{json .}}", {"a": "<&>", "b": [1, None]}, '{"a":"<&>","b":[1,null]}'),
])
def test_semantics(tmpl: str, data: Any, want: str) -> None:
    assert g.Template("t", tmpl).execute(data) == want


@pytest.mark.parametrize(("tmpl", "msg"), [
    ("{{.Names", "template: ps:1:1: unclosed action"),
    ("ok\n{{.Nmae}}", "template: ps:2:3: executing \"ps\" at <.Nmae>: can't evaluate field Nmae"),
    ("{{if .A}}", "template: ps:1:3: unexpected EOF: {{if}} has no {{end}}"),
    ("{{bogus .A}}", "template: ps:1:3: function \"bogus\" not defined"),
    ("{{$x}}", "template: ps:1:3: undefined variable \"$x\""),
])
def test_errors_name_template_and_position(tmpl: str, msg: str) -> None:
    with pytest.raises(g.TemplateError) as e:
        g.render("ps", tmpl, [{"Names": "a", "A": 1}])
    assert e.value.message == msg
    assert e.value.hint


def test_tabwriter_columns_per_block() -> None:
    # a line without a tab ends the columns above it, as Go's tabwriter flushes there
    assert g.tabwrite("a\tbb\nccc\td\nplain\nx\ty") == (
        "a           bb\nccc         d\nplain\nx           y")


# --------------------------------------------------------------------------- network ls / inspect, history

def _net() -> Any:
    from slirp.usernet import NetworkConfig

    return NetworkConfig("pn1", "e92bc767c25cbe7a81708baf3aa62f7a6e5e0b0c9c2e240fdc29e5bd144cb4d3", "10.90.0.0/24",
                         "10.90.0.1", labels={"a": "b"}, created=1796221782.635004)


# Recorded with podman 4.3 here (`podman network create --label a=b --subnet 10.90.0.0/24 pn1`), our
# network's own interface name and creation time in place of netavark's.
@pytest.mark.parametrize(("fmt", "listing", "want"), [
    ("{{.Name}}|{{.ID}}|{{.Driver}}|{{.Labels}}|{{.Internal}}|{{.DNSEnabled}}|{{.Subnets}}", True,
     "pn1|e92bc767c25c|bridge|a=b|false|true|[{{{10.90.0.0 ffffff00}} 10.90.0.1 <nil>}]\n"),
    ("{{range .Subnets}}{{.Subnet}}|{{.Gateway}}|{{.LeaseRange}}{{end}}", True, "10.90.0.0/24|10.90.0.1|<nil>\n"),
    ("{{.IPv6Enabled}}|{{.Options}}|{{.IPAMOptions}}", True, "false|map[]|map[driver:host-local]\n"),
    ("table {{.ID}} {{.DNSEnabled}} {{.IPv6Enabled}} {{.IPAMOptions}}", True,
     "NETWORK ID    DNS ENABLED  I PV 6 ENABLED  IPAM OPTIONS\n"
     "e92bc767c25c  true         false           map[driver:host-local]\n"),
    ("{{.ID}}|{{.Subnets}}|{{.IPAMOptions}}|{{.Options}}|{{json .Labels}}|{{index .Labels \"a\"}}", False,
     "e92bc767c25cbe7a81708baf3aa62f7a6e5e0b0c9c2e240fdc29e5bd144cb4d3|[{{{10.90.0.0 ffffff00}} 10.90.0.1 <nil>}]|"
     "map[driver:host-local]|map[]|{\"a\":\"b\"}|b\n"),
    ("{{.Labels}} {{.NetworkInterface}} {{.Created}}", False,
     "map[a:b] rle92bc767c25c 2026-12-02 14:29:42.635004 +0000 UTC\n"),
])
def test_network_views_recorded_from_podman(fmt: str, listing: bool, want: str) -> None:
    from rootless.commands.networks import NETWORK_HEADERS, template_view

    view = template_view(_net(), listing=listing, no_trunc=not listing)
    out = g.render("network ls", fmt, [view], NETWORK_HEADERS) if listing else g.render_one("inspect", fmt, view)
    assert out == want


def test_network_inspect_unknown_field_is_podmans_error() -> None:
    from rootless.commands.networks import template_view

    # (Podman's column is 13: it runs the format inside "{{range . }}")
    with pytest.raises(g.TemplateError, match=r'template: inspect:1:3: executing "inspect" at <\.Nope>: '
                                              "can't evaluate field Nope"):
        g.render_one("inspect", "{{.Nope}}", template_view(_net()))


def test_history_view_recorded_from_podman() -> None:
    from rootless.build.cmd import _history_view

    row = {"created": "2026-12-02T13:51:48.332910904Z", "size": 2140160, "comment": "imported from tarball",
           "created_by": "/bin/sh -c #(nop) ADD file:743fb5c00aa92dec19ed4facba02bde4c39edc1d6ed6db60ff27eccb8f226f57"
                         " in /"}
    ident = "97147e7f37bde77e596310a5e1c0d61db747f22e4206bf4f36f20a74bb3305c5"
    fmt = "{{.ID}}|{{.Created}}|{{.CreatedBy}}|{{.Size}}|{{.Comment}}|{{.CreatedAt}}|{{.Tags}}"
    assert g.render("history", fmt, [_history_view(ident, row, no_trunc=False, human=False)]) == (
        "97147e7f37bd|2026-12-02T13:51:48Z|/bin/sh -c #(nop) ADD file:743fb5c00aa92de...|2.14 MB|"
        "imported from tarball|2026-12-02 13:51:48 +0000 UTC|[]\n")
    table = g.render("history", "table {{.ID}} {{.CreatedBy}} {{.Size}} {{.Comment}}",
                     [_history_view(ident, row, no_trunc=False, human=True)])
    assert table == ("ID            CREATED BY                                     SIZE        COMMENT\n"
                     "97147e7f37bd  /bin/sh -c #(nop) ADD file:743fb5c00aa92de...  2.14 MB     imported from tarball\n")
    full = g.render("history", "{{.ID}} {{.CreatedBy}}", [_history_view(ident, row, no_trunc=True, human=True)])
    assert full == f"{ident} {row['created_by']}\n"
