"""docker/Dockerfile read as stages, and Docker's .dockerignore matching, for the tests next to this file."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from dockerfile_parse import DockerfileParser

from tests.labs import LABS, ROOT

DOCKERFILE = ROOT / "docker" / "Dockerfile"
LAB_FOLDERS = LABS  # lab name -> folder


@dataclass
class Stage:
    name: str
    base: str  # what FROM names: another stage or an image
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (INSTRUCTION, value)

    def values(self, instruction: str) -> list[str]:
        return [v for i, v in self.instructions if i == instruction]


@dataclass
class Dockerfile:
    global_args: dict[str, str | None]  # ARGs before the first FROM
    stages: dict[str, Stage]

    @classmethod
    def read(cls, path: Path = DOCKERFILE) -> Dockerfile:
        with path.open("rb") as f:  # fileobj=: path= wants a folder or a file named exactly Dockerfile
            structure = DockerfileParser(fileobj=f, env_replace=False).structure
        global_args: dict[str, str | None] = {}
        stages: dict[str, Stage] = {}
        current: Stage | None = None
        for item in structure:
            instruction, value = item["instruction"], item["value"].strip()
            if instruction == "COMMENT":
                continue
            if instruction == "FROM":
                words = value.split()
                name = words[2] if len(words) == 3 and words[1].lower() == "as" else str(len(stages))
                current = stages[name] = Stage(name, words[0])
            elif current is None and instruction == "ARG":
                key, _, default = value.partition("=")
                global_args[key] = default or None
            elif current is not None:
                current.instructions.append((instruction, value))
        return cls(global_args, stages)

    def chain(self, target: str) -> list[Stage]:
        """The stages an image of `target` is made of, base first (FROM links only)."""
        out = [self.stages[target]]
        while out[0].base in self.stages:
            out.insert(0, self.stages[out[0].base])
        return out

    def build_graph(self, target: str) -> list[Stage]:
        """Every stage building `target` needs: its FROM chain and the stages it copies from."""
        seen: dict[str, Stage] = {}
        todo = [target]
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            stage = seen[name] = self.stages[name]
            if stage.base in self.stages:
                todo.append(stage.base)
            todo += [copy_from(v) for v in stage.values("COPY") if copy_from(v)]
        return list(seen.values())


def copy_from(value: str) -> str | None:
    match = re.search(r"--from=(\S+)", value)
    return match.group(1) if match else None


def copy_sources(value: str) -> list[str]:
    """The context paths a COPY without --from takes (every word but the flags and the destination)."""
    words = json.loads(value) if value.startswith("[") else shlex.split(value)
    words = [w for w in words if not w.startswith("--")]
    return words[:-1]


def exec_form(value: str) -> list[str] | None:
    """ENTRYPOINT/CMD in exec form (a JSON list of strings), or None for the shell form."""
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        return None
    ok = isinstance(parsed, list) and all(isinstance(word, str) for word in parsed)
    return parsed if ok else None


def last_value(stages: list[Stage], instruction: str) -> str | None:
    values = [v for stage in stages for v in stage.values(instruction)]
    return values[-1] if values else None


def env_of(stages: list[Stage]) -> dict[str, str]:
    """ENV key=value pairs set along a chain of stages (later wins)."""
    env: dict[str, str] = {}
    for stage in stages:
        for value in stage.values("ENV"):
            for word in shlex.split(value):
                key, _, val = word.partition("=")
                env[key] = val
    return env


def readme_docker_runs(readme: Path = ROOT / "docker" / "README.md") -> list[list[str]]:
    """The argv of every `docker run …` command in the README (continuation lines joined, comments cut)."""
    text = readme.read_text().replace("\\\n", " ")
    return [
        shlex.split(line.split(" #")[0])
        for line in text.splitlines()
        if line.strip().startswith("docker run")
    ]


# ---- .dockerignore ------------------------------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Docker's pattern syntax (Go filepath.Match plus `**`) as a regular expression over a/b/c paths."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def dockerignore_rules(path: Path) -> list[tuple[bool, re.Pattern[str]]]:
    """(is_exception, regex) per line: `!` lines let back in what earlier lines left out."""
    rules = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:].strip() if negate else line
        rules.append((negate, _pattern_regex(pattern.strip("/").removeprefix("./"))))
    return rules


def is_ignored(rules: list[tuple[bool, re.Pattern[str]]], relpath: str) -> bool:
    """Whether the build context leaves out `relpath`: the last rule matching it or a parent folder wins."""
    parts = relpath.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for negate, regex in rules:
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            ignored = not negate
    return ignored
