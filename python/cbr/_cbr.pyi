# Type stubs of the compiled bindings (crates/cbr-python/src/lib.rs). The public API is in
# cbr/__init__.py; these take the plain values it prepares and return the JSON the `cbr`
# command prints.
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

_Progress = Optional[Callable[[int, int], None]]
_Pairs = Optional[List[Tuple[str, str]]]
_Pixels = Sequence[Tuple[int, int, bytes]]

def version() -> str: ...
def known_embedders() -> List[str]: ...

class Classifier:
    def __init__(self, path: str) -> None: ...
    @property
    def info_json(self) -> str: ...
    @property
    def labels(self) -> List[str]: ...
    def classify_paths(
        self, paths: List[str], top_k: int, threshold: Optional[float]
    ) -> List[str]: ...
    def classify_pixels(
        self, images: _Pixels, top_k: int, threshold: Optional[float]
    ) -> List[str]: ...

class Embedder:
    def __init__(self, args: Dict[str, Any]) -> None: ...
    @property
    def info_json(self) -> str: ...
    @property
    def preprocess_json(self) -> str: ...
    @property
    def dim(self) -> int: ...
    def embed_paths(self, paths: List[str], max_pixels: int, progress: _Progress) -> bytes: ...
    def embed_pixels(self, images: _Pixels) -> bytes: ...

def build(
    output: str,
    source: Optional[str],
    pairs: _Pairs,
    shards: Optional[List[str]],
    embedder: Dict[str, Any],
    head: Dict[str, Any],
    input: Dict[str, Any],
    out: Dict[str, Any],
    augment: bool,
    progress: _Progress,
) -> str: ...
def build_from_embeddings(
    output: str,
    embeddings: bytes,
    dim: int,
    labels: List[str],
    image_ids: Optional[List[str]],
    embedder: Dict[str, Any],
    head: Dict[str, Any],
    out: Dict[str, Any],
) -> str: ...
def embed_shard(
    source: str,
    output: str,
    shard_index: int,
    shard_count: int,
    embedder: Dict[str, Any],
    input: Dict[str, Any],
    augment: bool,
    progress: _Progress,
) -> str: ...
def add(
    model: str,
    output: Optional[str],
    source: Optional[str],
    pairs: _Pairs,
    input: Dict[str, Any],
    augment: bool,
    progress: _Progress,
) -> str: ...
def remove(model: str, labels: List[str], output: Optional[str]) -> str: ...
def relabel(model: str, from_: str, to: str, output: Optional[str]) -> str: ...
def evaluate(
    source: Optional[str],
    pairs: _Pairs,
    shots: List[int],
    seeds: int,
    embedder: Dict[str, Any],
    augment: bool,
    cache: bool,
    progress: _Progress,
) -> str: ...
