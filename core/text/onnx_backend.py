"""The ``onnx`` and ``onnx-int8`` embedding backends: a sentence-transformers model exported to ONNX.

The transformer, mean pooling over the attention mask and L2 normalisation are exported together as one graph
with the legacy TorchScript exporter. ``onnx`` runs that fp32 graph as it is: the same vectors as torch (to
~2e-7) at about 2.5x less latency for one review, which is what the prediction API needs. ``onnx-int8`` also
quantises the weights per channel with onnxruntime's dynamic quantisation (per-tensor int8 lost too much:
cosine ~0.92 to fp32, see ``ENVIRONMENT.md``): faster again, but different vectors. The exported file is cached
in a folder under a fingerprint of the weights, the verified digest of the model files they were read from
(`core.text.weights`) and the library versions, so a changed model or an upgraded exporter gets a fresh export and an
unchanged one is reused by every process. A sidecar JSON records the export's own SHA-256: an exported file that
no longer matches it (edited, truncated, replaced) is exported again rather than used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import WorkbenchError
from core.text.weights import file_sha256

log = logging.getLogger(__name__)

#: Bump when the exported graph or the quantisation settings change, so old cached files are not reused.
EXPORT_VERSION = "1"
ONNX_OPSET = 17
#: Threads for one inference session; the batch-32 measurements in ENVIRONMENT.md were made with 2.
DEFAULT_THREADS = 2
#: How long a process waits for another one that is exporting the same model before exporting itself.
EXPORT_LOCK_TIMEOUT_S = 900.0
_INPUT_ORDER = ("input_ids", "attention_mask", "token_type_ids")


def _require_onnx() -> tuple[Any, Any]:
    """Import onnx and onnxruntime, or say how to install them."""
    try:
        import onnx
        import onnxruntime
    except ImportError as err:
        raise WorkbenchError(
            f"the onnx embedding backends need the packages 'onnx' and 'onnxruntime' ({err}); "
            "install them with `pip install -c constraints.txt onnx onnxruntime` "
            "or choose the 'torch' embedding backend"
        ) from err
    return onnx, onnxruntime


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def _check_pipeline(st_model: Any) -> None:
    """Refuse models whose pipeline the exported graph would not reproduce (CLS pooling, Dense heads, ...)."""
    names = [type(module).__name__ for module in st_model]
    mode = getattr(st_model[1], "pooling_mode", None) if len(names) >= 2 else None
    pooling_ok = len(names) >= 2 and names[1] == "Pooling" and mode == "mean"
    if not (names and names[0] == "Transformer" and pooling_ok and all(n == "Normalize" for n in names[2:])):
        raise WorkbenchError(
            "the onnx backends export Transformer -> mean Pooling -> Normalize models only; "
            f"this model is {' -> '.join(names)} (pooling {mode!r}); "
            "use the 'torch' embedding backend for it"
        )


def model_fingerprint(st_model: Any, source_digest: str | None = None) -> str:
    """A short hash that changes whenever the exported file would: weights, architecture, library versions,
    and the digest of the verified model files the weights were loaded from (`core.text.weights`), when given.

    Hashing the weights rather than trusting the folder name means an edited or replaced model in the same
    place is re-exported; hashing ~90 MB takes about 0.1 s, small next to loading the model.
    """
    transformer = st_model[0].model
    digest = hashlib.blake2b(digest_size=8)
    header = {
        "export_version": EXPORT_VERSION,
        "opset": ONNX_OPSET,
        "architecture": type(transformer).__name__,
        "modules": [type(m).__name__ for m in st_model],
        "torch": _version("torch"),
        "onnx": _version("onnx"),
        "onnxruntime": _version("onnxruntime"),
    }
    if source_digest:
        header["source_digest"] = source_digest
    digest.update(json.dumps(header, sort_keys=True).encode())
    for name, tensor in sorted(transformer.state_dict().items()):
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@contextlib.contextmanager
def _quiet_root_logger(prefix: str) -> Iterator[None]:
    """Drop root-logger records starting with `prefix` while the block runs."""

    def keep(record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(prefix)

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def _export(st_model: Any, target: Path, input_names: Sequence[str], quantize: bool) -> None:
    """Export (and quantise) into a temporary folder next to `target`, then move the result into place.

    ``os.replace`` is atomic on one file system, so readers see either no file or a complete one, and two
    processes that race both end with the same, whole file.
    """
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    class MeanPoolNormalize(torch.nn.Module):
        """Transformer -> mean over real tokens -> unit length, as sentence-transformers computes it."""

        def __init__(self, transformer: torch.nn.Module) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            kwargs = dict(zip(input_names, inputs, strict=True))
            tokens = self.transformer(**kwargs, return_dict=True).last_hidden_state
            mask = kwargs["attention_mask"].unsqueeze(-1).to(tokens.dtype)
            # clamp: an all-padding row (cannot happen with [CLS]/[SEP], but cheap) must not divide by 0.
            pooled = (tokens * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    wrapper = MeanPoolNormalize(st_model[0].model).eval()
    example = st_model.tokenizer(
        ["an example review to trace the graph", "short"], padding=True, return_tensors="pt"
    )
    args = tuple(example[name] for name in input_names)
    dynamic = {name: {0: "batch", 1: "sequence"} for name in input_names}
    dynamic["embedding"] = {0: "batch"}

    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=target.parent) as tmp:
        fp32 = Path(tmp) / "model-fp32.onnx"
        int8 = Path(tmp) / "model-int8.onnx"
        # The tracer warns about Python branches in transformers' masking code; they only depend on the
        # padding layout of an encoder (no KV cache, never causal), so the traced graph stays general.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapper,
                args,
                str(fp32),
                input_names=list(input_names),
                output_names=["embedding"],
                dynamic_axes=dynamic,
                opset_version=ONNX_OPSET,
                do_constant_folding=True,
                dynamo=False,  # the dynamo exporter does not handle this model in torch 2.13 + transformers 5
            )
        if not quantize:
            os.replace(fp32, target)
            return
        # Pre-processing (shape inference, fusion) measured no faster here, so its advice is silenced.
        with _quiet_root_logger("Please consider to run pre-processing"):
            quantize_dynamic(str(fp32), str(int8), per_channel=True, weight_type=QuantType.QInt8)
        os.replace(int8, target)


class OnnxEncoder:
    """Embeds texts with an ONNX export (fp32, or int8-quantised) of a sentence-transformers model.

    Parameters
    ----------
    st_model
        A loaded ``SentenceTransformer`` of the shape Transformer -> mean Pooling -> (Normalize); its
        tokenizer and ``max_seq_length`` are used as they are.
    onnx_dir
        Folder that keeps exported models; created when missing. One file per fingerprint.
    threads
        onnxruntime intra-op threads.
    quantize
        int8 weights (faster, cosine ~0.99 to fp32) instead of the fp32 graph (the same vectors as torch).
    source_digest
        Digest of the model files `st_model` was loaded from, verified by `core.text.weights`: part of the export's
        file name and recorded in its sidecar, so an export is only reused for the same verified weights.

    Calling the encoder with a list of texts returns an ``(n, dim)`` float32 array of unit vectors.
    """

    def __init__(
        self,
        st_model: Any,
        onnx_dir: str | Path,
        threads: int = DEFAULT_THREADS,
        quantize: bool = True,
        source_digest: str | None = None,
    ) -> None:
        _, ort = _require_onnx()
        _check_pipeline(st_model)
        self.tokenizer = st_model.tokenizer
        self.max_seq_length = int(st_model.max_seq_length or self.tokenizer.model_max_length)
        self.input_names = tuple(n for n in _INPUT_ORDER if n in self.tokenizer.model_input_names)
        self.source_digest = source_digest
        self.fingerprint = model_fingerprint(st_model, source_digest)
        self.onnx_dir = Path(onnx_dir)
        self.quantize = bool(quantize)
        self.model_path = self.onnx_dir / f"model-{self.fingerprint}.{'int8' if quantize else 'fp32'}.onnx"
        #: True when this instance ran the export; False when it found the file already there.
        self.exported = False
        self.export_seconds = 0.0
        self._ensure_exported(st_model)

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(
                str(self.model_path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as err:  # a truncated or foreign file: say which, so it can be deleted
            raise WorkbenchError(
                f"cannot open the exported ONNX model {self.model_path} ({type(err).__name__}: {err}); "
                "delete it to export again"
            ) from err
        # The graph's output width can be symbolic after export; the model knows it for sure.
        get_dim = getattr(st_model, "get_embedding_dimension", None)
        get_dim = get_dim or st_model.get_sentence_embedding_dimension  # sentence-transformers < 6
        self.dim = int(get_dim())

    def _export_ok(self, warn: bool = False) -> bool:
        """The export is there and is the file its sidecar records, for the same source weights."""
        if not self.model_path.is_file():
            return False
        sidecar = self.model_path.with_suffix(".json")
        try:
            info = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            info = {}
        if (info.get("onnx_sha256") == file_sha256(self.model_path)
                and info.get("source_digest") == self.source_digest):
            return True
        if warn:
            log.warning("the exported ONNX model %s is not the file its sidecar %s records (edited, truncated, or "
                        "exported by an older version): exporting it again", self.model_path, sidecar.name)
        return False

    def _ensure_exported(self, st_model: Any) -> None:
        if self._export_ok():
            return
        from filelock import FileLock, Timeout

        self.onnx_dir.mkdir(parents=True, exist_ok=True)
        lock: FileLock | None = FileLock(str(self.model_path) + ".lock")
        try:
            # The lock only saves a second process the work; correctness comes from the atomic rename.
            lock.acquire(timeout=EXPORT_LOCK_TIMEOUT_S)  # type: ignore[union-attr]
        except Timeout:
            lock = None
        try:
            if self._export_ok(warn=True):
                return
            start = time.perf_counter()
            try:
                _export(st_model, self.model_path, self.input_names, self.quantize)
            except WorkbenchError:
                raise
            except Exception as err:
                raise WorkbenchError(
                    f"exporting the embedding model to ONNX int8 failed ({type(err).__name__}: {err}); "
                    "use the 'torch' embedding backend"
                ) from err
            self.export_seconds = time.perf_counter() - start
            self.exported = True
            self._write_sidecar()
        finally:
            if lock is not None:
                lock.release()

    def _write_sidecar(self) -> None:
        """What the fingerprint stood for, for a person wondering which file is which."""
        info = {
            "fingerprint": self.fingerprint,
            "source_digest": self.source_digest,
            "onnx_sha256": file_sha256(self.model_path),
            "export_version": EXPORT_VERSION,
            "opset": ONNX_OPSET,
            "quantized": self.quantize,
            "torch": _version("torch"),
            "onnx": _version("onnx"),
            "onnxruntime": _version("onnxruntime"),
            "sentence_transformers": _version("sentence-transformers"),
            "transformers": _version("transformers"),
            "inputs": list(self.input_names),
            "export_seconds": round(self.export_seconds, 2),
        }
        sidecar = self.model_path.with_suffix(".json")
        tmp = sidecar.with_name(f".{sidecar.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(info, indent=2))
        os.replace(tmp, sidecar)

    def _arrays(self, ids: list[int], types: list[int] | None) -> dict[str, np.ndarray]:
        """The graph's inputs for one text's tokens: no padding, so no attention mask to apply."""
        arrays = {
            "input_ids": np.asarray([ids], dtype=np.int64),
            "attention_mask": np.ones((1, len(ids)), dtype=np.int64),
            "token_type_ids": np.asarray([types if types is not None else [0] * len(ids)], dtype=np.int64),
        }
        return {name: arrays[name] for name in self.input_names}

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """Embed `texts`; returns an ``(n, dim)`` float32 array of unit vectors in the order given.

        Every text is its own forward pass, so its vector is the same bits whichever texts come with it, in any
        order, on any number of threads: one machine, the API and Spark executors agree exactly, and scores that
        count reviews past a threshold do not move with the batch. Batched passes were not reproducible: fp32 rows
        moved by ~1e-7 with the batch's shape, and int8's dynamic quantisation scales activations per batch (up to
        0.06 per component, cosine 0.994 to the same text alone). One text per pass measured 1.3x faster than
        padded batches on long hotel reviews and 0.73x on short Beauty ones (fp32, 2 threads; int8 the same speed).
        """
        texts = ["" if t is None else str(t) for t in texts]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        # Tokenise everything at once: the fast tokenizer parallelises poorly per call.
        encoded = self.tokenizer(
            texts, truncation=True, max_length=self.max_seq_length, padding=False, return_attention_mask=False
        )
        ids: list[list[int]] = encoded["input_ids"]
        types: list[list[int]] | None = encoded.get("token_type_ids")
        for i in range(len(texts)):
            (vector,) = self.session.run(["embedding"], self._arrays(ids[i], types[i] if types else None))
            out[i] = vector[0]
        return out
