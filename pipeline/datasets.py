"""Few-shot benchmarks: split lists (local or downloaded from their public source), class names, video lookup.

Split lists are `<class name>/<video id>` lines, one file per split. `--splits DIR`
may hold `train.txt`, `val.txt`, `test.txt` directly, or a folder per dataset
(`DIR/ssv2_full/train.txt`, as in the published split collections). Without it the
lists are downloaded once from the authors' public repositories into a cache.
A listed video is looked up as a path under the root first (`VideoIndex`), so that
per-class numbering (`ROOT/<class>/0.mp4`) keeps every video in its class.
"""

from __future__ import annotations

import json
import os
import re
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from fsar.pipeline.atomic import write_bytes_atomic

SPLITS = ("train", "val", "test")
VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".webm", ".avi", ".mkv", ".mov", ".m4v", ".gif", ".mpg", ".mpeg", ".flv", ".wmv", ".ogv", ".3gp", ".ts"}
)

_TRX = "https://raw.githubusercontent.com/tobyperrett/trx/390c20aa8ed7e309ae4949464fdcf015c4009329/splits"
_CMN = "https://raw.githubusercontent.com/ffmpbgrnn/CMN/23b5ef3e6defd4ee93e97131eb3c0b7926481f56"


@dataclass(frozen=True)
class DatasetSpec:
    """A benchmark's identity and where its split lists come from.

    Attributes:
        name: the CLI name.
        title: what papers call it, with the split's origin.
        folder: its folder name in a split collection (`DIR/<folder>/train.txt`).
        sources: public URL of each split list (empty: the lists come with the data).
        ssv2_labels: class labels are anonymous (`train12`); names come from SSv2's label files.
        view: the image view `fsar-data embed --view auto` gives it: clip-fsar (the official
            CLIP-FSAR test view) for the paper's benchmarks, clip (open_clip's eval transform) else.
    """

    name: str
    title: str
    folder: str = ""
    sources: dict = field(default_factory=dict)
    ssv2_labels: bool = False
    view: str = "clip-fsar"


DATASETS: dict[str, DatasetSpec] = {
    d.name: d
    for d in [
        DatasetSpec(
            "ssv2", "SSv2-Full (OTAM split, Cao et al. 2020)", "ssv2_full",
            {s: f"{_TRX}/ssv2_OTAM/{s}list07.txt" for s in SPLITS}, ssv2_labels=True,
        ),
        DatasetSpec("ssv2-small", "SSv2-Small (CMN split, Zhu & Yang 2018)", "ssv2_small", {s: f"{_CMN}/smsm-100/{s}.list" for s in SPLITS}),
        DatasetSpec("kinetics100", "Kinetics-100 (CMN split, Zhu & Yang 2018)", "kinetics100", {s: f"{_CMN}/kinetics-100/{s}.list" for s in SPLITS}),
        DatasetSpec("ucf101", "UCF101 (ARN split, Zhang et al. 2020)", "ucf101", {s: f"{_TRX}/ucf_ARN/{s}list03.txt" for s in SPLITS}),
        DatasetSpec("hmdb51", "HMDB51 (ARN split, Zhang et al. 2020)", "hmdb51", {s: f"{_TRX}/hmdb_ARN/{s}list03.txt" for s in SPLITS}),
        DatasetSpec("synth", "the built-in synthetic benchmark (fsar-data synth)", view="clip"),
        DatasetSpec("folder", "any folder of videos with `<class>/<id>` split lists", view="clip"),
    ]
}


def dataset_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}") from None


def default_cache_dir() -> Path:
    """Where downloaded split lists live: $FSAR_CACHE, else $XDG_CACHE_HOME/fsar, else ~/.cache/fsar."""
    if os.environ.get("FSAR_CACHE"):
        return Path(os.environ["FSAR_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fsar"


def download_splits(spec: DatasetSpec, cache_dir: Path) -> Path:
    """Fetch a dataset's split lists once into `cache_dir/splits/<folder>/`; returns that folder."""
    if not spec.sources:
        raise ValueError(f"{spec.name}: no public split lists to download; pass --splits DIR")
    dest = Path(cache_dir) / "splits" / spec.folder
    dest.mkdir(parents=True, exist_ok=True)
    for split, url in spec.sources.items():
        target = dest / f"{split}.txt"
        if target.exists():
            continue
        try:
            with urllib.request.urlopen(url, timeout=60) as r:
                data = r.read()
        except OSError as e:
            raise RuntimeError(
                f"could not download the {spec.name} {split} list from {url} ({e}); "
                f"download it by hand, or pass --splits DIR with {split}.txt in it"
            ) from None
        write_bytes_atomic(target, data)
    return dest


def find_split_dir(spec: DatasetSpec, splits: Path | None, root: Path, cache_dir: Path | None = None) -> Path:
    """The folder holding `<split>.txt` for this dataset: --splits, the data's own, or a download."""
    candidates = []
    if splits is not None:
        candidates += [Path(splits), Path(splits) / spec.folder] if spec.folder else [Path(splits)]
    elif spec.name in ("synth", "folder"):
        candidates.append(Path(root) / "splits")
    for c in candidates:
        if any((c / f"{s}.txt").exists() for s in SPLITS):
            return c
    if candidates:
        raise FileNotFoundError(f"no train.txt, val.txt or test.txt in {' or '.join(map(str, candidates))}")
    return download_splits(spec, cache_dir or default_cache_dir())


def read_split(path: Path) -> list[tuple[str, str]]:
    """Parse `<class name>/<video id>` lines into (class, id) pairs, in file order.

    A UTF-8 byte order mark is dropped and blank lines are skipped.

    Raises:
        ValueError: naming the file and line, for a line that is not `<class>/<id>`, an
            absolute path, a `.` or `..` component, or a line listed twice (a repeated
            video would repeat its sample key in the shard, which readers refuse).
    """
    entries = []
    first_seen: dict[str, int] = {}
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = line.replace("\ufeff", "").strip()  # a BOM starts the file, or a file concatenated into it
        if not line:
            continue
        if line.startswith(("/", "\\")) or re.match(r"[A-Za-z]:[\\/]", line):
            raise ValueError(f"{path}:{n}: {line!r} is an absolute path; lines are '<class name>/<video id>', relative to --root")
        if any(part in (".", "..") for part in line.split("/")):
            raise ValueError(f"{path}:{n}: {line!r} has a '.' or '..' component; lines are '<class name>/<video id>', inside --root")
        cls, sep, vid = line.rpartition("/")
        if not sep or not cls or not vid:
            raise ValueError(f"{path}:{n}: expected '<class name>/<video id>', got {line!r}")
        if line in first_seen:
            raise ValueError(
                f"{path}:{n}: {line!r} is listed again (first at {path}:{first_seen[line]}); "
                "a video may appear once in a split list: delete one of the two lines"
            )
        first_seen[line] = n
        entries.append((cls, vid))
    return entries


@dataclass(frozen=True)
class Lookup:
    """Where a listed video was found.

    Attributes:
        path: the file (a str, as the shard tasks carry it), or None (missing, or ambiguous).
        how: "path" (ROOT/<class>/<id>), "class folder" (a folder named for the class,
            deeper under the root), "id" (the only file with that id), "missing" or "ambiguous".
        candidates: for "ambiguous", the files it could be.
    """

    path: str | None
    how: str
    candidates: tuple[str, ...] = ()


class VideoIndex:
    """Every video file under a root, looked up as split lists name them.

    A listed `<class>/<id>` is first the path ROOT/<class>/<id>.<any video extension> (or
    ROOT/<class>/<id> when the id carries its extension); then the file with that id in a
    folder named for the class, deeper under the root (ROOT/train/<class>/<id>.mp4); then
    the file with that id anywhere, where only one file has it and that file is not in a
    folder named for another listed class (it is that class's video). Between files that
    share an id, nothing is guessed: the video is ambiguous.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        # Paths are str: a Path per file took as long as all the rest of planning 67k SSv2 videos.
        self._by_path: dict[str, list[str]] = {}  # "<dir>/<stem>" and "<dir>/<name>" (relative to root) -> files
        self._by_id: dict[str, list[str]] = {}  # "<stem>" and "<name>" -> files anywhere under root
        self._folder_runs: dict[str, frozenset[str]] = {}  # each file's runs of consecutive folder names
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames.sort()
            parts = Path(dirpath).relative_to(self.root).parts
            prefix = "".join(f"{p}/" for p in parts)
            runs = frozenset("/".join(parts[i:j]) for i in range(len(parts)) for j in range(i + 1, len(parts) + 1))  # a, a/b, b
            for name in sorted(filenames):
                stem, ext = os.path.splitext(name)
                if ext.lower() not in VIDEO_EXTENSIONS or name.startswith("."):
                    continue
                path = os.path.join(dirpath, name)
                self._folder_runs[path] = runs
                for vid in (stem, name):
                    self._by_path.setdefault(prefix + vid, []).append(path)
                    self._by_id.setdefault(vid, []).append(path)

    def find(self, label: str, vid: str, labels: frozenset[str] = frozenset()) -> Lookup:
        """Find the file of the listed video `label/vid`.

        Args:
            label: its class, as the split list writes it.
            vid: its id, with or without the file's extension.
            labels: every class listed: a file in a folder named for another class is
                that class's video, never found by its id alone for this one.

        Returns:
            The file and how it was found; or why none was (missing, or ambiguous with
            the files it could be).
        """
        exact = self._by_path.get(f"{label}/{vid}", [])
        if len(exact) == 1:
            return Lookup(exact[0], "path")
        if exact:  # ROOT/<class>/<id>.mp4 and .webm
            return Lookup(None, "ambiguous", tuple(exact))
        anywhere = self._by_id.get(vid, [])
        in_class = [p for p in anywhere if label in self._folder_runs[p]]
        if len(in_class) == 1:
            return Lookup(in_class[0], "class folder")
        if len(anywhere) > 1:
            return Lookup(None, "ambiguous", tuple(in_class or anywhere))
        if anywhere and not self._folder_runs[anywhere[0]] & (labels - {label}):
            return Lookup(anywhere[0], "id")
        return Lookup(None, "missing")


def ssv2_class_names(root: Path, entries: dict[str, list[tuple[str, str]]]) -> dict[str, str]:
    """Names for SSv2-Full's anonymous labels from SSv2's own annotation files under `root`.

    Each OTAM label (`train12`) covers the videos of one SSv2 template; the template,
    with its brackets removed ("Pushing something from left to right"), is the name.
    Returns {} when `train.json`/`validation.json` are not found.
    """
    id_to_template: dict[str, str] = {}
    for fname in ("train.json", "validation.json", "something-something-v2-train.json", "something-something-v2-validation.json"):
        for path in sorted(Path(root).rglob(fname)):
            for item in json.loads(path.read_text(encoding="utf-8")):
                id_to_template[str(item["id"])] = re.sub(r"[\[\]]", "", item["template"])
    if not id_to_template:
        return {}
    names: dict[str, str] = {}
    for split_entries in entries.values():
        for label, vid in split_entries:
            if label not in names and vid in id_to_template:
                names[label] = id_to_template[vid]
    return names
