"""What reviewed scans teach: each image of a run with its catalogue values and the inspectors' decisions applied.

A scan with ``--truth`` stores, per image, the catalogue row it was compared with; `inspector review import` stores
the inspectors' decisions on the disagreements. `read_reviewed_images` turns both into training targets:

- ``catalogue_wrong`` with a corrected value: the correction replaces the catalogue value;
- ``model_wrong`` and ``both_fine``: the catalogue value stays (an inspector confirmed it);
- ``catalogue_wrong`` without a corrected value (or with one that cannot be read as the field's kind): nobody
  confirmed the right value, so the field is *left out*: the example never teaches a value for it;
- fields nobody reviewed keep the catalogue value, or are left out with ``reviewed_only``.

A size table is one value in an answer: one of its sizes left out leaves the whole table out.

Images are read where the run saw them and must still have the sha256 the run stored. One that moved (or was
replaced) is looked for by its sha256 under the given image folders and the run's own inputs; one not found is
skipped, counted and listed. Nothing here loads a model: every problem with the databases or runs is an
`InputError` raised before training starts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from inspector.discovery import ImageSource, discover, read_source
from inspector.errors import InputError, NoCatalogueError, NoDecisionsError, RunNotFoundError
from inspector.fields import FieldSet, FieldSpec, FieldValue, ProductFields
from inspector.images import ImageLoadError, decode_image, sha256_hex
from inspector.kinds import kind_of
from inspector.parsing import normalise_size, read_price
from inspector.review import BOTH_FINE, CATALOGUE_WRONG, MODEL_WRONG
from inspector.scoring import SIZE_FIELD_PREFIX
from inspector.store import Review, RunInfo, Store, open_store
from inspector.store.engine import database_url, sqlite_file
from inspector.truth import load_truth

#: How many missing images a summary lists (all are counted).
MAX_LISTED = 50


@dataclass(frozen=True)
class ReviewedImage:
    """One image of a reviewed run and what it should teach."""

    location: str
    path: Path
    sha256: str
    #: The run it comes from, as messages name it ("reviews.db run 3").
    origin: str
    #: The catalogue row the scan matched (1-based data row of the run's catalogue) and its key.
    row_number: int
    key: str | None
    #: The catalogue values with the decisions applied; fields left out are absent.
    fields: ProductFields
    #: Result name ("price", "size_price:8") -> the decision applied to it.
    decided: tuple[tuple[str, str], ...] = ()
    #: Field names (declared names; a size table by its own name) the example must not teach a value for.
    left_out: tuple[str, ...] = ()
    #: Result name -> (catalogue value, value taught) for each correction applied.
    corrected: tuple[tuple[str, str | None, FieldValue], ...] = ()


@dataclass
class ReviewSummary:
    """What the reviewed runs gave, and everything skipped (each skipped thing is counted, none is fatal)."""

    databases: list[str] = field(default_factory=list)
    #: Each run used, as "DB run N".
    runs: list[str] = field(default_factory=list)
    images: int = 0
    #: Decisions applied, by kind; and decisions on fields this training does not teach (not applied).
    decisions: dict[str, int] = field(default_factory=lambda: {CATALOGUE_WRONG: 0, MODEL_WRONG: 0, BOTH_FINE: 0})
    untaught_decisions: int = 0
    #: catalogue_wrong decisions whose corrected value replaced the catalogue value.
    corrections: int = 0
    #: Fields left out because nobody confirmed a value (catalogue_wrong without a readable corrected value).
    unconfirmed_fields: int = 0
    #: Corrected values that cannot be read as the field's kind (e.g. price "about 12"): left out too.
    unreadable_corrections: int = 0
    #: Fields left out by reviewed_only (nobody reviewed them).
    unreviewed_fields: int = 0
    #: Fields left out because the scan could not read their catalogue cell (e.g. price "TBD") and no correction
    #: gave the value: the stored empty value is not a confirmed "none".
    unreadable_cells: int = 0
    #: Images with nothing left to teach (reviewed_only and no decision, or every value left out).
    nothing_to_teach: int = 0
    #: Images of the runs without a catalogue row, or whose catalogue row has no value.
    without_catalogue_row: int = 0
    #: Images not at their scanned path any more (or changed there) but found elsewhere by their sha256.
    moved_images: int = 0
    #: Images not found, or only unreadable copies ("origin: location" -> why): skipped.
    missing_images: int = 0
    missing: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["missing"] = dict(list(self.missing.items())[:MAX_LISTED])
        return data


# ------------------------------------------------------------------------------------------------ corrections


def read_corrected_value(spec: FieldSpec, text: str, currency: str | None) -> FieldValue:
    """A reviewer's corrected value read as a catalogue cell of the field's kind is read (`currency` settles a
    price's separators as the currency column does); None when it cannot be read: never guessed."""
    return kind_of(spec).read_correction(spec, text, currency)


def apply_decisions(
    catalogue: ProductFields,
    decisions: dict[str, Review],
    fieldset: FieldSet,
    summary: ReviewSummary,
    *,
    reviewed_only: bool = False,
    unreadable: frozenset[str] = frozenset(),
) -> tuple[ProductFields, dict[str, str], list[str], list[tuple[str, str | None, FieldValue]]]:
    """(values, decided, left out, corrections) for one image: the catalogue values with the decisions applied.

    `decisions` is keyed by result name ("price", "size_price:8"); decisions on fields not in `fieldset` are
    counted in `summary.untaught_decisions` and not applied. `unreadable`: fields whose catalogue cell the scan
    could not read (stored empty, yet not known to be empty): left out unless a correction gives the value."""
    values = ProductFields({name: value for name, value in catalogue.items() if name not in unreadable})
    decided: dict[str, str] = {}
    left_out: list[str] = []
    corrected: list[tuple[str, str | None, FieldValue]] = []
    sizes_spec = fieldset.first("size_prices")
    taught = set(fieldset.names)
    for name in decisions:
        is_size = sizes_spec is not None and name.startswith(SIZE_FIELD_PREFIX)
        if not is_size and name not in taught:
            summary.untaught_decisions += 1
    # The currency first: it settles how a corrected price's separators read.
    currency_spec = fieldset.first("currency")
    ordered = sorted(fieldset, key=lambda spec: spec is not currency_spec)
    for spec in ordered:
        if spec is sizes_spec:
            continue
        review = decisions.get(spec.name)
        if review is not None:
            decided[spec.name] = review.decision
            summary.decisions[review.decision] += 1
        if review is None or review.decision != CATALOGUE_WRONG:
            if spec.name in unreadable:
                left_out.append(spec.name)
                summary.unreadable_cells += 1
            elif review is None and reviewed_only:
                left_out.append(spec.name)
                summary.unreviewed_fields += 1
            continue
        currency = values[currency_spec.name] if currency_spec is not None else None
        value = (
            read_corrected_value(spec, review.corrected_value, currency)
            if review.corrected_value is not None
            else None
        )
        if value is None:
            if review.corrected_value is not None:
                summary.unreadable_corrections += 1
            summary.unconfirmed_fields += 1
            values[spec.name] = None
            left_out.append(spec.name)
            continue
        corrected.append((spec.name, _shown(catalogue[spec.name]), value))
        values[spec.name] = value
        summary.corrections += 1
    if sizes_spec is not None:
        currency = values[currency_spec.name] if currency_spec is not None else None
        _apply_size_decisions(values, catalogue, decisions, sizes_spec, currency, summary, reviewed_only, decided,
                              left_out, corrected, sizes_spec.name in unreadable)  # fmt: skip
    return values, decided, left_out, corrected


def _apply_size_decisions(
    values: ProductFields,
    catalogue: ProductFields,
    decisions: dict[str, Review],
    spec: FieldSpec,
    currency: str | None,
    summary: ReviewSummary,
    reviewed_only: bool,
    decided: dict[str, str],
    left_out: list[str],
    corrected: list[tuple[str, str | None, FieldValue]],
    unreadable_table: bool,
) -> None:
    """Per-size decisions on the size table: corrections replace or add a size's price; an unconfirmed size
    leaves the whole table out (an answer's table is one value: without that size it would claim the card has
    no such size), and so does a table with a catalogue cell the scan could not read."""
    sizes = {normalise_size(size): amount for size, amount in (catalogue[spec.name] or {}).items()}
    confirmed = True
    size_decisions = {
        normalise_size(name[len(SIZE_FIELD_PREFIX) :]): review
        for name, review in decisions.items()
        if name.startswith(SIZE_FIELD_PREFIX)
    }
    for size, review in size_decisions.items():
        name = f"{SIZE_FIELD_PREFIX}{size}"
        decided[name] = review.decision
        summary.decisions[review.decision] += 1
        if review.decision != CATALOGUE_WRONG:
            continue
        amount = read_price(review.corrected_value, currency).amount if review.corrected_value else None
        if amount is None:
            if review.corrected_value is not None:
                summary.unreadable_corrections += 1
            summary.unconfirmed_fields += 1
            sizes.pop(size, None)
            confirmed = False
            continue
        corrected.append((name, _shown(sizes.get(size)), amount))
        sizes[size] = amount
        summary.corrections += 1
    values[spec.name] = sizes
    reviewed = bool(size_decisions) and set(sizes) <= set(size_decisions)
    if not confirmed:
        left_out.append(spec.name)
    elif unreadable_table:
        left_out.append(spec.name)
        summary.unreadable_cells += 1
    elif reviewed_only and not reviewed:
        left_out.append(spec.name)
        summary.unreviewed_fields += 1


def _shown(value: FieldValue) -> str | None:
    return None if value is None else str(value)


# ------------------------------------------------------------------------------------------------ runs


def _open(database: str) -> Store:
    path = sqlite_file(database_url(database))
    if path is not None and not path.is_file():
        raise InputError(f"--reviews {database}: no such database; pass the --db file that the scan wrote")
    return open_store(database, read_only=True)


def select_runs(databases: Sequence[str], run_refs: Sequence[str]) -> list[tuple[str, Store, RunInfo]]:
    """(database, store, run) of every run to learn from: those named by `run_refs` (looked up in every database;
    each must be in at least one), or else every run with decisions. Each must have a catalogue and each database
    must give some decision. Raises InputError subclasses, one line each."""
    if not databases:
        raise InputError("--reviews: pass the database that holds the imported decisions")
    stores = [(database, _open(database)) for database in databases]
    chosen: list[tuple[str, Store, RunInfo]] = []
    if run_refs:
        for ref in run_refs:
            found = []
            errors = []
            for database, store in stores:
                try:
                    found.append((database, store, store.get_run(ref)))
                except RunNotFoundError as error:
                    errors.append(str(error))
            if not found:
                if len(errors) == 1:
                    raise RunNotFoundError(f"--run {ref}: {errors[0]}")
                raise RunNotFoundError(
                    f"--run {ref}: no such run in any of the --reviews databases ({', '.join(databases)})"
                )
            for item in found:
                if all(item[2].id != run.id or item[0] != db for db, _, run in chosen):
                    chosen.append(item)
    _check_catalogues(chosen)
    for database, store in stores:
        runs = [run for db, _, run in chosen if db == database] if run_refs else store.list_runs()
        if run_refs and not runs:
            continue  # none of the runs asked for is in this database
        with_decisions = [run for run in runs if store.reviews(run.id)]
        if not with_decisions:
            ids = ", ".join(str(run.id) for run in runs)
            where = f"{'run' if len(runs) == 1 else 'runs'} {ids} of {database}" if run_refs else database
            raise NoDecisionsError(
                f"no decisions in {where}: import the report's decisions with `inspector review import "
                f"decisions.csv --db {database}`, or train on a catalogue with --truth"
            )
        if not run_refs:
            chosen += [(database, store, run) for run in with_decisions]
    _check_catalogues(chosen)
    return chosen


def _check_catalogues(chosen: list[tuple[str, Store, RunInfo]]) -> None:
    for database, _, run in chosen:
        if run.truth_path is None:
            raise NoCatalogueError(
                f"{database} {run.label} was scanned without a catalogue (--truth), so it has no values to learn; "
                "pass --run with runs scanned with --truth"
            )


def unreadable_cells(database: str, run: RunInfo, fieldset: FieldSet) -> dict[int, frozenset[str]]:
    """Catalogue row number -> fields of `fieldset` whose cell the scan could not read. The store keeps such a
    cell as no value, so when the run counted any, its catalogue is read again (as the scan read it) to tell
    which; a catalogue that cannot be read any more is an InputError (training would teach "none" for them)."""
    count = ((run.stats or {}).get("truth") or {}).get("unparseable_cells") or 0
    if not count:
        return {}
    settings = run.settings
    try:
        table = load_truth(run.truth_path, settings.get("truth_columns"), settings.get("truth_key"), run.fields)
    except InputError as error:
        raise InputError(
            f"{database} {run.label}: its catalogue had {count} unreadable cells and cannot be read again to tell "
            f"which ({error}); restore {run.truth_path}, or leave the run out with --run"
        ) from None
    by_column: dict[str, str] = {}
    for key, column in table.columns.items():
        spec = fieldset.first("size_prices") if key.startswith("size:") else next(
            (spec for spec in fieldset if spec.key == key), None
        )
        if spec is not None:
            by_column[column] = spec.name
    found: dict[int, set[str]] = {}
    for problem in table.unparseable_cells:
        if problem.column in by_column:
            found.setdefault(problem.row_number, set()).add(by_column[problem.column])
    return {row: frozenset(names) for row, names in found.items()}


# ------------------------------------------------------------------------------------------------ images


def _roots(paths: Iterable[str]) -> list[Path]:
    roots: list[Path] = []
    for text in paths:
        if "://" in text:
            continue
        path = Path(text)
        if not path.exists():  # a folder that is gone: never widen the search to its parent
            continue
        folder = path if path.is_dir() else path.parent
        if folder not in roots:
            roots.append(folder)
    return roots


def _read(path: Path) -> tuple[str | None, str | None]:
    """(sha256, None) of a readable image, (None, why) otherwise."""
    try:
        data = read_source(ImageSource(str(path), path=path))
        decode_image(data)
    except ImageLoadError as error:
        return None, str(error)
    return sha256_hex(data), None


def _sha(path: Path) -> str | None:
    try:
        return sha256_hex(read_source(ImageSource(str(path), path=path)))
    except ImageLoadError:
        return None


class ImageFinder:
    """Finds each image of a run by sha256: at its scanned path, else among the files under `roots` of the same
    size (hashed once, on the first image that is not where the scan saw it)."""

    def __init__(self, roots: list[Path], workers: int) -> None:
        self.roots = roots
        self.workers = max(1, workers)
        self._index: dict[str, Path] | None = None
        self._sizes: set[int | None] = set()

    def _build_index(self) -> dict[str, Path]:
        files = [source.path for source in discover(self.roots) if source.path is not None]
        wanted = self._sizes
        if None not in wanted:
            files = [path for path in files if _size(path) in wanted]
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            shas = list(pool.map(_sha, files))
        index: dict[str, Path] = {}
        for path, sha in zip(files, shas, strict=True):
            if sha is not None:
                index.setdefault(sha, path)
        return index

    def find(self, wanted: list[tuple[str, str, int | None]]) -> dict[str, tuple[Path | None, str | None, bool]]:
        """location -> (path, why not, moved) for each (location, sha256, n_bytes)."""
        local = [(loc, sha) for loc, sha, _ in wanted if "://" not in loc]
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            checks = dict(zip([loc for loc, _ in local], pool.map(lambda item: _read(Path(item[0])), local),
                              strict=True))  # fmt: skip
        found: dict[str, tuple[Path | None, str | None, bool]] = {}
        lost: list[tuple[str, str, str]] = []
        for location, sha, size in wanted:
            got, why = checks.get(location, (None, "a URL: training reads local files"))
            if got == sha:
                found[location] = (Path(location), None, False)
                continue
            if got is not None:
                why = "changed since the scan (its sha256 differs)"
            elif location in checks and not Path(location).exists():
                why = "not at its scanned path any more"
            elif location in checks:  # there, but unreadable: look for a readable copy before giving up
                why = f"unreadable ({why})"
            self._sizes.add(size)
            lost.append((location, sha, why))
        if lost and self._index is None:
            self._index = self._build_index()
        for location, sha, why in lost:
            path = (self._index or {}).get(sha)
            if path is not None and _read(path)[0] == sha:
                found[location] = (path, None, True)
            else:
                searched = ", ".join(str(root) for root in self.roots) or "no folder (pass --images)"
                found[location] = (None, f"{why}; no file with its sha256 under {searched}", False)
        return found


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


# ------------------------------------------------------------------------------------------------ reading


def read_reviewed_images(
    databases: Sequence[str],
    run_refs: Sequence[str],
    fieldset: FieldSet,
    *,
    image_roots: Sequence[str] = (),
    reviewed_only: bool = False,
    workers: int = 4,
) -> tuple[list[ReviewedImage], ReviewSummary]:
    """The images of the reviewed runs (see `select_runs`) with what each should teach, and the counts."""
    summary = ReviewSummary(databases=list(databases))
    chosen = select_runs(databases, run_refs)
    try:
        return _read_runs(chosen, fieldset, summary, image_roots, reviewed_only, workers), summary
    finally:
        for store in {id(store): store for _, store, _ in chosen}.values():
            store.close()


def _read_runs(
    chosen: list[tuple[str, Store, RunInfo]],
    fieldset: FieldSet,
    summary: ReviewSummary,
    image_roots: Sequence[str],
    reviewed_only: bool,
    workers: int,
) -> list[ReviewedImage]:
    for database, _, run in chosen:
        missing = [spec.name for spec in fieldset if spec.name not in run.fields]
        if missing:
            raise InputError(
                f"{database} {run.label} did not read {', '.join(missing)}, which this training teaches (its "
                "catalogue values were not stored); train with the --fields file the scan used"
            )
    images: list[ReviewedImage] = []
    for database, store, run in chosen:
        origin = f"{database} {run.label}"
        summary.runs.append(origin)
        decisions: dict[str, dict[str, Review]] = {}
        for review in store.reviews(run.id):
            decisions.setdefault(review.sha256, {})[review.field] = review
        rows = store.run_rows(run.id, with_thumbnails=False)
        summary.images += len(rows)
        usable = []
        for row in rows:
            truth = row["truth"]
            catalogue = ProductFields(truth["fields"]) if truth else ProductFields()
            if catalogue.is_empty():
                summary.without_catalogue_row += 1
                continue
            usable.append((row, catalogue))
        unknown = unreadable_cells(database, run, fieldset)
        finder = ImageFinder(_roots([*image_roots, *run.inputs]), workers)
        located = finder.find([(row["path"], row["sha256"], row["n_bytes"]) for row, _ in usable])
        for row, catalogue in usable:
            path, why, moved = located[row["path"]]
            if path is None:
                summary.missing_images += 1
                summary.missing[f"{origin}: {row['path']}"] = why or "not found"
                continue
            summary.moved_images += moved
            values, decided, left_out, corrected = apply_decisions(
                catalogue, decisions.get(row["sha256"], {}), fieldset, summary, reviewed_only=reviewed_only,
                unreadable=unknown.get(row["truth"]["row_number"], frozenset()),
            )  # fmt: skip
            if not _taught(fieldset, left_out):
                summary.nothing_to_teach += 1
                continue
            images.append(
                ReviewedImage(
                    location=str(path),
                    path=path,
                    sha256=row["sha256"],
                    origin=origin,
                    row_number=row["truth"]["row_number"],
                    key=row["truth"]["key"],
                    fields=values,
                    decided=tuple(decided.items()),
                    left_out=tuple(left_out),
                    corrected=tuple(corrected),
                )
            )
    return images


def _taught(fieldset: FieldSet, left_out: list[str]) -> bool:
    """Whether any declared field is still taught (an empty value is taught as "none" in an answer)."""
    return any(spec.name not in left_out for spec in fieldset)
