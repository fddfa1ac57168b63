"""Training examples from a catalogue CSV and an image folder, found, matched and decoded exactly as a scan does.

Each usable image becomes one example: the image, the question, and the canonical answer that `format_answer`
writes from the image's catalogue row. The train/validation split is by catalogue row (several images of one
product never straddle it) and depends only on the seed and the set of rows.
"""

from __future__ import annotations

import json
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from inspector.discovery import ImageSource, discover, read_source
from inspector.errors import InputError
from inspector.fields import FieldSet, ProductFields
from inspector.images import ImageLoadError, decode_image, sha256_hex
from inspector.kinds import kind_of
from inspector.outputs import write_text_atomic
from inspector.prompts import Prompt, format_answer, get_prompt
from inspector.training.config import TrainConfig
from inspector.training.reviews import ReviewSummary, read_reviewed_images
from inspector.truth import load_truth


@dataclass(frozen=True)
class Example:
    """One image with what the model should answer about it."""

    #: Where the image is, as discovery found it.
    location: str
    path: Path
    #: 1-based CSV data row the image matched; the split keeps each row on one side.
    row_number: int
    #: The catalogue's fields (restricted to the asked sizes when the prompt asks for some).
    truth: ProductFields
    #: The target answer: `format_answer(truth, style)`.
    answer: str
    sha256: str | None = None
    #: Where the row comes from: the catalogue CSV, or the reviewed run ("reviews.db run 3"). The split keeps
    #: each (origin, row_number) on one side.
    origin: str = ""
    #: Result name ("price", "size_price:8") -> the inspector's decision applied to it.
    decided: tuple[tuple[str, str], ...] = ()
    #: Fields nobody confirmed a value for: `truth` lacks them and the loss skips `ignored_spans` of the answer.
    left_out: tuple[str, ...] = ()
    #: Character spans of `answer` the loss ignores (a left-out field's `null`).
    ignored_spans: tuple[tuple[int, int], ...] = ()


@dataclass
class DataSummary:
    """What was found, used and skipped; every skipped thing is counted, none is fatal."""

    rows: int = 0
    images_found: int = 0
    matched_images: int = 0
    #: Images with no catalogue row.
    unmatched_images: int = 0
    #: Catalogue rows with no image.
    unmatched_rows: int = 0
    #: Matched images that cannot be read or decoded (path -> reason in `unreadable`).
    unreadable_images: int = 0
    #: Byte-identical copies of an image already used.
    duplicate_images: int = 0
    #: Matched rows with no product value to learn (every field empty).
    empty_rows: int = 0
    unparseable_cells: int = 0
    #: Catalogue lines with more or fewer cells than the header: skipped (see `inspector.truth.MalformedRow`).
    malformed_rows: int = 0
    #: Matched images whose row has a cell that cannot be read (e.g. price "TBD"): the answer built from it
    #: would teach a wrong value (null), so the image is not used.
    bad_rows: int = 0
    train_examples: int = 0
    val_examples: int = 0
    unreadable: dict[str, str] = field(default_factory=dict)
    #: How the catalogue columns were chosen, where the user should know (`TruthTable.warnings`).
    column_warnings: list[str] = field(default_factory=list)
    #: Reviewed runs (--reviews): decisions applied, fields left out, images moved or missing.
    reviews: ReviewSummary | None = None

    def to_dict(self) -> dict:
        data = asdict(self)
        data["unreadable"] = dict(list(self.unreadable.items())[:50])
        data["reviews"] = self.reviews.to_dict() if self.reviews else None
        return data


@dataclass
class TrainingData:
    train: list[Example]
    val: list[Example]
    prompt: Prompt
    answer_style: str
    summary: DataSummary
    #: Fields that the catalogue gives for at least one example: the ones evaluation averages over.
    scored_fields: list[str]
    #: The fields taught and evaluated.
    fields: FieldSet
    #: What the reviewed runs gave (None without --reviews).
    reviews: ReviewSummary | None = None


def restrict_sizes(fields: ProductFields, sizes: list[str], fieldset: FieldSet) -> ProductFields:
    """Only the asked sizes' prices: that is what a prompt with sizes asks the model for."""
    table = fieldset.first("size_prices")
    if not sizes or table is None:
        return fields
    restricted = ProductFields(fields)
    restricted[table.name] = {s: p for s, p in (fields[table.name] or {}).items() if s in set(sizes)}
    return restricted


def _check_image(source: ImageSource) -> tuple[str | None, str | None]:
    """(sha256, None) for a usable image, (None, reason) otherwise."""
    try:
        data = read_source(source)
        decode_image(data)
    except ImageLoadError as error:
        return None, str(error)
    return sha256_hex(data), None


def _scored_fields(examples: list[Example], fieldset: FieldSet) -> list[str]:
    """The fields some catalogue row gives a value for (a size table's sizes count as "size_price")."""
    return [
        kind_of(spec).result_group(spec)
        for spec in fieldset
        if any(e.truth[spec.name] is not None for e in examples)
    ]


def split_examples(
    examples: list[Example], val_fraction: float, seed: int
) -> tuple[list[Example], list[Example]]:
    """Deterministic split by catalogue row: the rows are shuffled by `seed`, the first share is validation."""
    rows = sorted({(e.origin, e.row_number) for e in examples})
    random.Random(f"inspector-split:{seed}").shuffle(rows)
    n_val = round(len(rows) * val_fraction) if val_fraction > 0 else 0
    if val_fraction > 0 and len(rows) >= 2:
        n_val = min(max(n_val, 1), len(rows) - 1)
    val_rows = set(rows[:n_val])
    train = [e for e in examples if (e.origin, e.row_number) not in val_rows]
    val = [e for e in examples if (e.origin, e.row_number) in val_rows]
    return train, val


def answer_leaving_out(
    truth: ProductFields, left_out: tuple[str, ...], style: str, fieldset: FieldSet
) -> tuple[str, tuple[tuple[int, int], ...]]:
    """The answer for `truth` (which lacks the left-out fields) and the character spans of the left-out fields'
    values, which the loss must skip: in a JSON answer each key is present, so a left-out field reads `null` (a
    size table its remaining sizes), and training on that would teach "the card shows none". Other answer styles
    write nothing for a missing value, so they have no span to skip."""
    answer = format_answer(truth, style, fieldset)
    if style != "json" or not left_out:
        return answer, ()
    spans = []
    for name in left_out:
        spec = fieldset[name]
        value = answer_json_value(truth, spec)
        pair = json.dumps({spec.key: value}, ensure_ascii=False)[1:-1]  # '"key": value' as the answer writes it
        start = _top_level(answer, pair)
        value_start = start + len(json.dumps(spec.key, ensure_ascii=False)) + 2
        spans.append((value_start, start + len(pair)))
    return answer, tuple(sorted(spans))


def answer_json_value(truth: ProductFields, spec) -> object:
    """The value a JSON answer writes for `spec` (as `format_answer` does)."""
    return json.loads(format_answer(truth, "json", FieldSet((spec,))))[spec.key]


def _top_level(answer: str, pair: str) -> int:
    """Where '"key": value' starts as a top-level member of a one-line JSON object. Inside a JSON string every
    quote is escaped, so a match that follows "{" or ", " is the member itself."""
    start = answer.find(pair)
    while start != -1:
        if answer[start - 1 : start] == "{" or answer[max(0, start - 2) : start] == ", ":
            return start
        start = answer.find(pair, start + 1)
    raise ValueError(f"{pair!r} is not a member of the answer {answer!r}")


def _review_examples(config: TrainConfig, style: str, summary: DataSummary, seen: set[str], workers: int) -> list[Example]:
    """Examples from the reviewed runs of `config.reviews` (decisions applied; see inspector.training.reviews)."""
    fieldset = config.fieldset()
    roots = [config.images] if config.images else []
    images, reviews = read_reviewed_images(
        config.reviews, config.runs, fieldset, image_roots=roots, reviewed_only=config.reviewed_only,
        workers=workers,
    )  # fmt: skip
    summary.reviews = reviews
    summary.images_found += reviews.images
    examples = []
    for image in images:
        if image.sha256 in seen:
            summary.duplicate_images += 1
            continue
        seen.add(image.sha256)
        truth = restrict_sizes(image.fields, config.sizes, fieldset)
        answer, spans = answer_leaving_out(truth, image.left_out, style, fieldset)
        examples.append(
            Example(
                image.location, image.path, image.row_number, truth, answer, image.sha256, image.origin,
                image.decided, image.left_out, spans,
            )
        )  # fmt: skip
    return examples


def _read_examples(
    csv_path: str,
    image_root: Path,
    config: TrainConfig,
    style: str,
    summary: DataSummary,
    seen: set[str],
    workers: int,
) -> list[Example]:
    """Examples from one catalogue CSV and its images; adds its counts to `summary`. Images whose bytes are in
    `seen` (already used) are skipped as duplicates."""
    fieldset = config.fieldset()
    table = load_truth(csv_path, config.truth_columns, config.truth_key, fieldset)
    sources = [s for s in discover([image_root]) if s.path is not None]
    roots = sorted({s.root for s in sources if s.root is not None})
    match = table.match([s.path for s in sources], roots)
    summary.rows += match.total_rows
    summary.images_found += len(sources)
    summary.matched_images += len(match.records)
    summary.unmatched_images += len(match.unmatched_images)
    summary.unmatched_rows += match.unmatched_rows
    summary.unparseable_cells += len(match.unparseable_cells)
    summary.malformed_rows += len(match.malformed_rows)
    summary.column_warnings += [warning for warning in table.warnings if warning not in summary.column_warnings]

    bad_rows = {problem.row_number for problem in match.unparseable_cells}
    matched = [s for s in sources if s.path in match.records]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        checks = list(pool.map(_check_image, matched))
    examples: list[Example] = []
    for source, (sha, reason) in zip(matched, checks, strict=True):
        if sha is None:
            summary.unreadable_images += 1
            summary.unreadable[source.location] = reason or "unreadable"
            continue
        if sha in seen:
            summary.duplicate_images += 1
            continue
        seen.add(sha)
        record = match.records[source.path]
        if record.row_number in bad_rows:
            summary.bad_rows += 1
            continue
        truth = restrict_sizes(record.fields, config.sizes, fieldset)
        if truth.is_empty():
            summary.empty_rows += 1
            continue
        answer = format_answer(truth, style, fieldset)
        examples.append(Example(source.location, source.path, record.row_number, truth, answer, sha, csv_path))
    return examples


def load_training_data(config: TrainConfig, workers: int = 4) -> TrainingData:
    """Find images, match them to catalogue rows as scan does, drop what cannot be used, split train/val.

    With `config.val_truth`, validation comes from that CSV instead of a split (its images are never trained
    on, even when the training folder holds a copy). Raises InputError when nothing is left to train on, with
    the counts that say why.
    """
    fieldset = config.fieldset()
    prompt = get_prompt(config.prompt, config.prompt_file, config.sizes or None, fieldset)
    style = config.answer_style or prompt.answer_style
    format_answer(ProductFields(), style)  # unknown style -> InputError before any work

    summary = DataSummary()
    seen: set[str] = set()

    def catalogue_and_reviews() -> list[Example]:
        # Reviewed runs first: an image that is also in the --truth catalogue is taught with its decisions.
        examples = _review_examples(config, style, summary, seen, workers) if config.reviews else []
        if config.truth:
            examples += _read_examples(config.truth, image_root, config, style, summary, seen, workers)
        return examples

    image_root = Path(config.images) if config.images else Path(config.truth or ".").resolve().parent
    if config.val_truth:
        val_root = Path(config.images) if config.images else Path(config.val_truth).resolve().parent
        val = _read_examples(config.val_truth, val_root, config, style, summary, seen, workers)
        train = catalogue_and_reviews()
        examples = train + val
    else:
        examples = catalogue_and_reviews()
        train, val = split_examples(examples, config.val_fraction, config.seed)
    summary.train_examples, summary.val_examples = len(train), len(val)
    if not train and not config.truth:
        reviews = summary.reviews
        raise InputError(
            f"No training examples from the reviewed runs: {reviews.images} images, "
            f"{reviews.missing_images} not found, {reviews.without_catalogue_row} without a catalogue row, "
            f"{reviews.nothing_to_teach} with nothing left to teach; pass --images with the folder that holds them "
            "now if they moved"
        )
    if not train:
        raise InputError(
            f"No training examples: {summary.images_found} images found under {image_root}, "
            f"{summary.matched_images} matched a row of {config.truth} ({summary.rows} rows), "
            f"{summary.unreadable_images} unreadable, {summary.empty_rows} rows with no product value, "
            f"{summary.bad_rows} with unreadable cells. "
            "Check --images and --truth (and --truth-columns / --truth-key for how rows name their images)"
        )
    return TrainingData(
        train, val, prompt, style, summary, _scored_fields(examples, fieldset), fieldset, summary.reviews
    )


def write_dataset(data: TrainingData, path: str | Path) -> int:
    """Write every example as one JSON line (train first, then validation); returns how many.

    Keys: image (path), sha256, split, answer (the exact target text), origin (catalogue CSV or reviewed run),
    row (its catalogue row), decisions (result name -> decision applied), left_out (fields nobody confirmed a value
    for), ignored_spans (character spans of the answer the loss skips)."""
    lines = []
    for split, examples in (("train", data.train), ("val", data.val)):
        for example in examples:
            record = {
                "image": example.location,
                "sha256": example.sha256,
                "split": split,
                "answer": example.answer,
                "origin": example.origin,
                "row": example.row_number,
                "decisions": dict(example.decided),
                "left_out": list(example.left_out),
                "ignored_spans": [list(span) for span in example.ignored_spans],
            }
            lines.append(json.dumps(record, ensure_ascii=False))
    write_text_atomic(Path(path), "".join(line + "\n" for line in lines), "the dataset")
    return len(lines)


class ExampleDataset:
    """A map-style dataset of examples; items are {"image": PIL RGB image, "answer": str, "index": int}.

    Images are decoded on access (in dataloader workers) by the same code as scan; they were all checked
    readable when the data was loaded.
    """

    def __init__(self, examples: list[Example]) -> None:
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict:
        example = self.examples[index]
        try:
            image = decode_image(read_source(ImageSource(example.location, path=example.path))).image
        except ImageLoadError as error:
            raise InputError(
                f"{example.location} became unreadable during training ({error}); restore it or remove its row"
            ) from None
        return {"image": image, "answer": example.answer, "index": index, "ignored_spans": example.ignored_spans}
