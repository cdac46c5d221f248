"""The Dockerfile parser, word processing, ignore files and the stage planner (pure)."""

from __future__ import annotations

import pytest

from rootless.build import ignore
from rootless.build.dockerfile import DockerfileError, parse
from rootless.build.plan import build_args_from, make_plan, meta_values
from rootless.build.words import SubstitutionError, process_word, process_words, split_quoted

# --------------------------------------------------------------------------- words

ENV = {"A": "a", "EMPTY": "", "SP": "x y"}


@pytest.mark.parametrize("text,want", [
    ("$A", "a"), ("${A}", "a"), ("pre${A}post", "preapost"),
    ("$UNSET", ""), ("${UNSET:-def}", "def"), ("${EMPTY:-def}", "def"), ("${EMPTY-def}", ""),
    ("${A:-def}", "a"), ("${A:+alt}", "alt"), ("${UNSET:+alt}", ""), ("${EMPTY:+alt}", ""),
    ("${EMPTY+alt}", "alt"), ("'$A'", "$A"), ('"$A b"', "a b"), ("\\$A", "$A"), ("a\\ b", "a b"),
    ("${UNSET:-${A}x}", "ax"), ("$", "$"), ("cost $5", "cost $5"), ('"q\\"t"', 'q"t'),
])
def test_process_word(text: str, want: str) -> None:
    assert process_word(text, ENV) == want


def test_process_word_records_used_names_and_backtick_escape() -> None:
    used: set[str] = set()
    assert process_word("$A ${B:-x}", ENV, used=used) == "a x"
    assert used == {"A", "B"}
    assert process_word("`$A", ENV, escape="`") == "$A"
    assert process_word("C:\\dir", ENV, escape="`") == "C:\\dir"


def test_process_words_split_and_errors() -> None:
    assert process_words('a "b c" $SP', ENV) == ["a", "b c", "x y"]
    with pytest.raises(SubstitutionError, match="must be set"):
        process_word("${UNSET:?must be set}", ENV)
    with pytest.raises(SubstitutionError):
        process_word("${A", ENV)
    with pytest.raises(SubstitutionError):
        process_word("'open", ENV)
    assert split_quoted('k="v 1" j=\'x y\' z\\ w') == ['k="v 1"', "j='x y'", "z\\ w"]


# --------------------------------------------------------------------------- parser

def test_parser_continuations_comments_forms() -> None:
    df = parse("""# syntax=docker/dockerfile:1
FROM busybox AS b
# a comment
RUN echo a \\
  # inner comment
  && echo b
CMD ["sh", "-c", "echo hi"]
ENTRYPOINT echo x
copy --chown=1:2 --chmod=640 a b /dst/
""", "Dockerfile")
    assert df.syntax == "docker/dockerfile:1"
    cmds = [i.cmd for i in df.instructions]
    assert cmds == ["FROM", "RUN", "CMD", "ENTRYPOINT", "COPY"]
    run = df.instructions[1]
    assert run.line == 4 and run.args == "echo a   && echo b"
    assert df.instructions[2].json_args == ("sh", "-c", "echo hi")
    assert df.instructions[3].json_args is None
    cp = df.instructions[4]
    assert cp.flag("--chown") == "1:2" and cp.flag("--chmod") == "640" and cp.args == "a b /dst/"


def test_escape_directive() -> None:
    df = parse("# escape=`\nFROM scratch\nRUN dir `\n  c:\\\n", "D")
    assert df.escape == "`"
    assert df.instructions[1].args == "dir   c:\\"


def test_directive_only_at_top() -> None:
    df = parse("FROM scratch\n# escape=`\nRUN a \\\n b\n")
    assert df.escape == "\\" and df.instructions[1].args == "a  b"


def test_heredocs() -> None:
    df = parse("FROM busybox\nRUN <<EOF\necho $HOME\nEOF\nCOPY <<-'X' <<Y /d/\n\tone $A\n\tX\ntwo\nY\nCMD x\n")
    run, cp, cmd = df.instructions[1:]
    assert run.heredocs[0].name == "EOF" and run.heredocs[0].body == "echo $HOME\n" and run.heredocs[0].expand
    assert [h.name for h in cp.heredocs] == ["X", "Y"]
    assert cp.heredocs[0].body == "one $A\n" and not cp.heredocs[0].expand
    assert cp.heredocs[1].body == "two\n"
    assert cmd.cmd == "CMD" and cmd.line == 10


@pytest.mark.parametrize("text,msg", [
    ("FROM busybox\nFOO bar\n", "D:2: unknown instruction: FOO"),
    ("FROM busybox\nRUN <<EOF\necho\n", "D:2: the heredoc <<EOF is not closed"),
    ("FROM busybox\nCOPY a\n", "D:2: COPY requires at least two arguments"),
    ("FROM busybox\nCOPY --frm=x a b\n", "D:2: COPY does not take the flag --frm"),
    ("FROM busybox\nSHELL sh -c\n", "D:2: SHELL requires the arguments as a JSON array"),
    ("# escape=x\nFROM busybox\n", "D:1: invalid escape character"),
    ("FROM busybox\nWORKDIR\n", "D:2: WORKDIR requires at least one argument"),
])
def test_parse_errors_name_file_and_line(text: str, msg: str) -> None:
    with pytest.raises(DockerfileError) as e:
        parse(text, "D")
    assert e.value.message.startswith(msg)
    assert e.value.hint


# --------------------------------------------------------------------------- ignore

@pytest.mark.parametrize("patterns,path,want", [
    ("*.log", "a.log", True), ("*.log", "d/a.log", False), ("**/*.log", "d/e/a.log", True),
    ("**/*.log", "a.log", True), ("d", "d/x/y", True), ("/d/", "d/x", True), ("d/*/z", "d/x/z", True),
    ("d/*/z", "d/x/y/z", False), ("*\n!keep.txt", "keep.txt", False), ("*\n!keep.txt", "other", True),
    ("!keep.txt\n*", "keep.txt", True), ("a?c", "abc", True), ("a[b-d]c", "acc", True),
    ("a[^b]c", "abc", False), ("# c\n\n  x  ", "x", True), ("d\n!d/keep", "d/keep", False),
    ("d\n!d/keep", "d/other", True), ("**", "any/thing", True), ("x/**/y", "x/y", True),
])
def test_ignore_rules(patterns: str, path: str, want: bool) -> None:
    assert ignore.Matcher(ignore.parse(patterns)).excluded(path) is want


def test_ignore_descends_only_for_exceptions() -> None:
    m = ignore.Matcher(ignore.parse("d\n!d/keep"))
    assert m.may_descend("d") and not m.may_descend("e")
    assert not ignore.Matcher(ignore.parse("d")).may_descend("d")


def test_ignore_file_beside_dockerfile_wins(tmp_path: object) -> None:
    import pathlib

    root = pathlib.Path(str(tmp_path))
    (root / ".dockerignore").write_text("a\n")
    (root / "sub").mkdir()
    (root / "sub" / "Containerfile").write_text("FROM scratch\n")
    assert ignore.find_file(str(root), str(root / "sub" / "Containerfile")) == str(root / ".dockerignore")
    (root / "sub" / "Containerfile.dockerignore").write_text("b\n")
    assert ignore.find_file(str(root), str(root / "sub" / "Containerfile")) == \
        str(root / "sub" / "Containerfile.dockerignore")
    (root / ".containerignore").write_text("c\n")
    assert ignore.find_file(str(root), None) == str(root / ".containerignore")


# --------------------------------------------------------------------------- planner

MULTI = """ARG BASE=busybox
ARG V
FROM $BASE AS build
RUN echo build
FROM busybox AS unused
RUN echo unused
FROM build AS test
COPY --from=build /a /a
FROM ${BASE}:${V:-latest}
COPY --from=test /a /b
COPY --from=0 /a /c
"""


def test_plan_builds_only_needed_stages_in_order() -> None:
    plan = make_plan(parse(MULTI, "D"))
    assert plan.order == (0, 2, 3)
    assert plan.stages[3].base == "busybox:latest"
    assert plan.stages[2].base_stage == 0
    assert plan.steps == 2 + 2 + 3
    assert make_plan(parse(MULTI, "D"), {"V": "1.36"}).stages[3].base == "busybox:1.36"
    assert make_plan(parse(MULTI, "D"), target="unused").order == (1,)
    assert make_plan(parse(MULTI, "D"), target="BUILD").order == (0,)


def test_plan_errors() -> None:
    with pytest.raises(DockerfileError, match="--target nope: no stage has that name"):
        make_plan(parse(MULTI, "D"), target="nope")
    with pytest.raises(DockerfileError, match=r"D:1: RUN before the first FROM"):
        make_plan(parse("RUN x\nFROM a\n", "D"))
    with pytest.raises(DockerfileError, match="no FROM"):
        make_plan(parse("ARG A\n", "D"))
    cyc = "FROM busybox AS a\nCOPY --from=b /x /x\nFROM busybox AS b\nCOPY --from=a /y /y\n"
    with pytest.raises(DockerfileError, match=r"D:\d: circular dependency"):
        make_plan(parse(cyc, "D"))
    with pytest.raises(DockerfileError, match=r"D:2: circular dependency"):
        make_plan(parse("FROM busybox AS a\nCOPY --from=a /x /x\n", "D"))
    with pytest.raises(DockerfileError, match="used twice"):
        make_plan(parse("FROM a AS x\nFROM b AS x\n", "D"))


def test_meta_args_and_build_args() -> None:
    df = parse("ARG A=1\nARG B=${A}2\nARG C\nFROM scratch\n", "D")
    plan = make_plan(df)
    vals = meta_values(plan.meta_args, {}, df, {})
    assert vals["A"] == "1" and vals["B"] == "12" and "C" not in vals and vals["TARGETARCH"] == "amd64"
    vals = meta_values(plan.meta_args, {"A": "9", "C": "c"}, df, {})
    assert vals["B"] == "92" and vals["C"] == "c"
    assert build_args_from(["X=1", "Y", "Z"], {"Y": "from-env"}) == {"X": "1", "Y": "from-env"}
