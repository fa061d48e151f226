"""Shipped demo artifacts: the tiny toy world (seed 0), its retriever and an X-KDE-trained model.

``xke demo`` runs in a few minutes because it does not train anything: the package carries, under
``xke/artifacts/demo/``, what these commands build (one torch thread, CPU)::

    xke --threads 1 world build --preset tiny --seed 0                       # world/ (world.json ... model/)
    xke --threads 1 world retriever --world W                                # world/retriever/
    xke --threads 1 train xkde --model world:W --source world:W --langs en,zh --preset toy --out X
                                                                             # xkde/ = X/model

``manifest.json`` records those commands, the seed, the build key and the sha256 of every file.
:func:`demo_artifacts` checks the checksums and copies the files into the xke cache (the package folder
stays read-only); ``xke demo --rebuild`` rebuilds all three from scratch and says which files came out
bit-identical. Maintainers refresh the shipped copy with
``python -m xke.artifacts pack --world W --xkde X/model`` (after a change to the tiny preset or the
recipe: ``tests/test_demo.py`` fails until then).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any, Sequence

from .errors import XkeError
from .fsutil import hash_path

#: the package copy (package data: pyproject's [tool.setuptools.package-data])
SHIPPED = Path(__file__).resolve().parent / "artifacts" / "demo"
MANIFEST = "manifest.json"

#: files taken from a built world directory (the retriever: every file of ``retriever/``)
WORLD_FILES = ("world.json", "cases.jsonl", "corpus.txt", "build.json", "report.json",
               "model/config.json", "model/generation_config.json", "model/chat_template.jinja",
               "model/model.safetensors", "model/tokenizer.json", "model/tokenizer_config.json")
#: files taken from an X-KDE recipe's ``model/`` (no training_args.bin: a pickle)
XKDE_FILES = ("config.json", "generation_config.json", "chat_template.jinja", "model.safetensors", "tokenizer.json",
              "tokenizer_config.json", "README.md", "tlpo_metrics.json")
#: files a rebuild with the same seed reproduces bit for bit (the others hold timings or paths)
DETERMINISTIC = ("world/world.json", "world/cases.jsonl", "world/corpus.txt", "world/model/model.safetensors",
                 "world/model/tokenizer.json", "world/retriever/model.safetensors", "xkde/model.safetensors")

COMMANDS = {
    "world": "xke --threads 1 world build --preset tiny --seed 0",
    "retriever": "xke --threads 1 world retriever --world W",
    "xkde": "xke --threads 1 train xkde --model world:W --source world:W --langs en,zh --preset toy --out X",
}


def load_manifest(root: str | Path = SHIPPED) -> dict[str, Any]:
    """The manifest of an artifact folder (a clear error when it is missing or broken)."""
    f = Path(root) / MANIFEST
    try:
        m = json.loads(f.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise XkeError(f"{f} is missing: this copy of xke has no demo artifacts; run `xke demo --rebuild`") from None
    except ValueError as e:
        raise XkeError(f"{f}: not valid JSON ({e}); reinstall xke or run `xke demo --rebuild`") from None
    if not isinstance(m.get("files"), dict):
        raise XkeError(f"{f}: no 'files' table; reinstall xke or run `xke demo --rebuild`")
    return m


def check_files(root: str | Path, expected: dict[str, str], names: Sequence[str] | None = None) -> list[str]:
    """Files under ``root`` whose sha256 differs from ``expected`` (``"path (missing)"`` when absent)."""
    bad = []
    for rel in names or sorted(expected):
        got = hash_path(Path(root) / rel)
        if got != expected.get(rel):
            bad.append(f"{rel} (missing)" if got == "missing" else rel)
    return bad


def _with_world_dir(config_bytes: bytes, world_dir: Path) -> bytes:
    """The X-KDE model's config.json with ``xke_world_dir`` set (where ``--mode retrieve`` and ``xke serve``
    find the world's retriever)."""
    cfg = json.loads(config_bytes)
    cfg["xke_world_dir"] = str(world_dir)
    return (json.dumps(cfg, indent=2, sort_keys=True) + "\n").encode()


def demo_artifacts(root: str | Path = SHIPPED, cache: str | Path | None = None) -> tuple[Path, Path]:
    """``(world_dir, xkde_model_dir)`` of the shipped demo artifacts, checked against the manifest's sha256
    and copied (once, atomically) into ``$XKE_CACHE/demo/<digest>`` so nothing writes into the package; the
    copy's X-KDE config names the copy's world (``xke_world_dir``)."""
    import hashlib

    from .fsutil import replace_dir
    from .paths import cache_dir

    root = Path(root)
    m = load_manifest(root)
    dest = Path(cache) if cache is not None else cache_dir("demo") / hash_path(root / MANIFEST)[:12]
    dest = dest.resolve()
    cfg_rel = "xkde/config.json"
    if dest.exists() and (root / cfg_rel).exists():
        want = dict(m["files"])
        want[cfg_rel] = hashlib.sha256(_with_world_dir((root / cfg_rel).read_bytes(), dest / "world")).hexdigest()
        if not check_files(dest, want):
            return dest / "world", dest / "xkde"
    bad = check_files(root, m["files"])
    if bad:
        raise XkeError(f"shipped demo artifacts in {root} do not match {MANIFEST}: {', '.join(bad[:5])}; "
                       "reinstall xke or run `xke demo --rebuild`")

    def fill(tmp: Path) -> None:
        for rel in m["files"]:
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / rel, tmp / rel)
        shutil.copyfile(root / MANIFEST, tmp / MANIFEST)
        (tmp / cfg_rel).write_bytes(_with_world_dir((root / cfg_rel).read_bytes(), dest / "world"))

    replace_dir(dest, fill)
    return dest / "world", dest / "xkde"


def portable_card(text: str) -> str:
    """A model card without the build machine's paths: ``world:/any/dir`` becomes ``world:W`` and a world's
    model folder ``/any/dir/model`` becomes ``W/model`` (``W`` as in the manifest's commands)."""
    text = re.sub(r"world:[^\s`]+", "world:W", text)
    return re.sub(r"`/[^`\s]*/(model)`", r"`W/\1`", text)


def pack(world_dir: str | Path, xkde_dir: str | Path, dest: str | Path = SHIPPED) -> dict[str, Any]:
    """Write a built world (with ``retriever/``) and an X-KDE model into ``dest`` with a manifest (commands,
    seed, build key, sha256 per file). The model's recorded ``xke_world_dir`` (a path of the build machine)
    is dropped and the model card names the world ``W``. Returns the manifest."""
    world_dir, xkde_dir, dest = Path(world_dir), Path(xkde_dir), Path(dest)
    build = json.loads((world_dir / "build.json").read_text())
    ret = world_dir / "retriever"
    if not (ret / "modules.json").exists():
        raise XkeError(f"{world_dir} has no trained retriever; run `xke world retriever --world {world_dir}` first")
    pairs = [(world_dir / r, f"world/{r}") for r in WORLD_FILES]
    pairs += [(f, f"world/retriever/{f.relative_to(ret).as_posix()}") for f in sorted(ret.rglob("*")) if f.is_file()]
    pairs += [(xkde_dir / r, f"xkde/{r}") for r in XKDE_FILES if (xkde_dir / r).exists()]
    if dest.exists():
        shutil.rmtree(dest)
    for src, rel in pairs:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest / rel)
    cfg_f = dest / "xkde" / "config.json"
    cfg = json.loads(cfg_f.read_text())
    cfg.pop("xke_world_dir", None)
    cfg_f.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    card = dest / "xkde" / "README.md"
    if card.exists():    # the model card names the world by the build machine's path: W, as in COMMANDS
        card.write_text(portable_card(card.read_text(encoding="utf-8")), encoding="utf-8")
    files = {rel: hash_path(dest / rel) for _, rel in pairs}
    manifest = {"what": "xke demo artifacts: the tiny toy world, its retriever, an X-KDE-trained model of it",
                "preset": build["preset"], "seed": build["seed"], "world_key": build["key"],
                "commands": COMMANDS, "deterministic": list(DETERMINISTIC), "files": files}
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m xke.artifacts pack|verify``: refresh or check the shipped demo artifacts."""
    ap = argparse.ArgumentParser(prog="python -m xke.artifacts", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack", help="copy a built world (+ retriever) and an X-KDE model into the package")
    p.add_argument("--world", required=True)
    p.add_argument("--xkde", required=True, help="the recipe's model/ folder")
    p.add_argument("--dest", default=str(SHIPPED))
    v = sub.add_parser("verify", help="check the shipped files against the manifest")
    v.add_argument("--dest", default=str(SHIPPED))
    args = ap.parse_args(argv)
    try:
        if args.cmd == "pack":
            m = pack(args.world, args.xkde, args.dest)
            size = sum((Path(args.dest) / r).stat().st_size for r in m["files"])
            print(f"packed {len(m['files'])} files ({size / 1e6:.1f} MB) into {args.dest}")
        else:
            bad = check_files(args.dest, load_manifest(args.dest)["files"])
            print("ok" if not bad else "differ: " + ", ".join(bad))
            return 1 if bad else 0
    except XkeError as e:
        print(f"xke: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
