"""Reading a run config: files, DeepSpeed file inlining, `--set` overrides, and errors that name file and field."""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import ValidationError

from dsgan.config.base import expand_home
from dsgan.config.models import DiscriminatorModel, GeneratorModel
from dsgan.config.run import Augment, Config, Data
from dsgan.errors import ConfigError

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "default" / "digits.yaml"
"""The run `load_config(None)` reads: the digits run, shipped inside the package with its two DeepSpeed JSONs."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping: PyYAML keeps the last silently, so a pasted
    second `run:` section would replace the first without a word."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping", node.start_mark, f"the key {key!r} is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def parse_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a safe loader)


def _one_line(exc: ValueError | yaml.YAMLError) -> str:
    """A parser's error on one line: PyYAML's own spans several, with a context that hides the problem."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem:
        mark = exc.problem_mark
        return exc.problem + (f" (line {mark.line + 1}, column {mark.column + 1})" if mark else "")
    return " ".join(str(exc).split())


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json.loads' object_pairs_hook: a JSON object with a key given twice is refused (json keeps the last)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"the key {key!r} is given twice in one object")
        out[key] = value
    return out


def read_file(path: Path) -> Any:
    """Parse YAML, JSON or TOML by extension; never executes anything. A key given twice is an error in all three
    (TOML's own rule)."""
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, not a config file")
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark (some Windows editors) is no error
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a text file (not UTF-8 at byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        suffix = path.suffix.lower()
        if suffix == ".json":
            return json.loads(text, object_pairs_hook=_unique_keys)
        if suffix == ".toml":
            return tomllib.loads(text)
        if suffix in (".yaml", ".yml"):
            return parse_yaml(text)
    except (ValueError, yaml.YAMLError) as exc:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        raise ConfigError(f"{path}: cannot parse: {_one_line(exc)}") from None
    raise ConfigError(f"{path}: unknown config format {path.suffix!r} (use .yaml, .json or .toml)")


def _inline_deepspeed(raw: dict[str, Any], base_dir: Path, source: str) -> None:
    """Replace `<network>.deepspeed: path` by the file's contents, so that overrides and errors see one tree."""
    for network in ("generator", "discriminator"):
        section = raw.get(network)
        if isinstance(section, dict) and isinstance(section.get("deepspeed"), str):
            path = (base_dir / expand_home(section["deepspeed"])).resolve()
            if not path.is_file():
                raise ConfigError(f"{source}: {network}.deepspeed: file not found: {path}")
            data = read_file(path)
            if not isinstance(data, dict):
                raise ConfigError(f"{path}: a DeepSpeed config must be a mapping")
            section["deepspeed"] = data
            section["_deepspeed_file"] = str(path)


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """`a.b.c=value`; the value is parsed as YAML (numbers, booleans, lists, null)."""
    key, sep, value = assignment.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {assignment!r}: expected key.path=value")
    *parents, leaf = key.split(".")
    node = raw
    for part in parents:
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
        if isinstance(node, list):
            raise ConfigError(f"--set {assignment!r}: {part} is a list: set it whole, e.g. --set '{part}=[...]'")
        if not isinstance(node, dict):
            raise ConfigError(f"--set {assignment!r}: {part} is not a section")
    try:
        parsed = parse_yaml(value)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {assignment!r}: the value is not valid YAML ({_one_line(exc)})") from None
    if leaf == "type" and node.get("type") != parsed:
        node.clear()  # a new type starts from that type's defaults, not the old type's fields
        node["type"] = parsed
    else:
        node[leaf] = parsed


def _tags(union: Any) -> set[str]:
    """The `type` tags of an `Annotated[A | B | ..., Field(discriminator="type")]` union."""
    members = get_args(get_args(union)[0])
    return {m.model_fields["type"].default for m in members}


# pydantic puts the chosen member's tag in an error's location (`generator.model.DCGANGenerator.noise_size`); the
# messages leave it out.
_UNION_TAGS = _tags(GeneratorModel) | _tags(DiscriminatorModel) | _tags(Data) | _tags(Augment)


def format_errors(exc: ValidationError, files: dict[str, str]) -> str:
    """One line per problem: `<file>: <dotted.field.path>: <message>`; DeepSpeed fields name the DeepSpeed file."""
    lines = []
    for err in exc.errors():
        parts = [str(p) for p in err["loc"] if p not in _UNION_TAGS]
        where = files.get(parts[0], files["run"]) if parts[1:2] == ["deepspeed"] else files["run"]
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (misspelt? `dsgan validate-config` with no file prints the default run's keys)"
        elif err["type"] == "union_tag_not_found":
            msg = "missing 'type'"
        lines.append(f"{where}: {'.'.join(parts)}: {msg}" if parts else f"{where}: {msg}")
    return "\n".join(lines)


def load_config(
    path: Path | str | None = None,
    overrides: Sequence[str] = (),
    *,
    world_size: int | None = None,
    device: str | None = None,
) -> Config:
    """Read, inline DeepSpeed files, validate, apply `--set` overrides, validate again.

    No `path` reads DEFAULT_CONFIG. A file that leaves out `run.dir` runs in `runs/<file stem>` (relative to the
    working directory), so that two configs never share a run dir by default. Raises ConfigError naming the file
    and the dotted field. `device` ('cpu'/'cuda') and `world_size` enable the checks that depend on where the run
    happens.
    """
    path = DEFAULT_CONFIG if path is None else Path(path)
    raw: dict[str, Any] = read_file(path) or {}
    source, base_dir = str(path), path.resolve().parent
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a run config must be a mapping at the top level")
    if isinstance(raw.setdefault("run", {}), dict):
        raw["run"].setdefault("dir", f"runs/{path.stem}")
    _inline_deepspeed(raw, base_dir, source)
    files = {"run": source}
    for network in ("generator", "discriminator"):
        if isinstance(raw.get(network), dict) and "_deepspeed_file" in raw[network]:
            files[network] = raw[network].pop("_deepspeed_file")
    _resolve_paths(raw, base_dir)
    context = {"world_size": world_size, "device": device}
    try:
        cfg = Config.model_validate(raw, context=context)
        if not overrides:
            return cfg
        # Overrides apply to the complete tree, so that `--set run.total_iters=10` keeps every other default.
        full = cfg.model_dump(mode="json")
        for assignment in overrides:
            apply_override(full, assignment)
        return Config.model_validate(full, context=context)
    except ValidationError as exc:
        raise ConfigError(format_errors(exc, files)) from None


def _resolve_paths(raw: dict[str, Any], base_dir: Path) -> None:
    """Data and weight paths are relative to the run config's folder; the run dir is relative to the cwd."""
    for section, key in (
        ("data", "root"),
        ("data", "path"),
        ("eval", "inception_weights"),
        ("eval", "reference_stats"),
        ("init", "checkpoint"),
    ):
        value = raw.get(section, {}).get(key) if isinstance(raw.get(section), dict) else None
        if isinstance(value, str) and not expand_home(value).is_absolute():
            raw[section][key] = str(base_dir / value)


def config_hash(cfg: Config) -> str:
    return hashlib.sha256(json.dumps(cfg.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:16]
