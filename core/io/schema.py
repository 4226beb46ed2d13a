"""The canonical review frame, the column names recognised without configuration, and the validation report."""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field

from core.errors import SchemaError

#: Columns of the canonical frame, in order. Only ``text`` is required in the input.
CANONICAL_COLUMNS: tuple[str, ...] = (
    "review_id",
    "text",
    "title",
    "rating",
    "helpful_vote",
    "verified_purchase",
    "product_title",
    "category",
    "timestamp",
    "user_id",
    "product_id",
)

#: Columns the loader adds itself; never taken from the input.
DERIVED_COLUMNS: tuple[str, ...] = ("is_duplicate", "source_line")

#: Source names recognised per canonical column, most specific first. Matching ignores case, spaces, dots,
#: hyphens and underscores ("Review Text", "review-text" and "reviews.text" all match "reviewtext"). Covered:
#: Amazon Reviews 2023 (rating, title, text, helpful_vote, verified_purchase, main_category, ...), the 2023
#: review+metadata join (title_x = review title, title_y = product title), Amazon 2018/2014 (overall, summary,
#: reviewText, reviewerID, unixReviewTime, vote, verified, helpful), Amazon's US reviews TSV (star_rating,
#: review_headline, review_body, helpful_votes), Yelp (stars, useful, business_id, date), Google Play (content,
#: score, thumbsUpCount, at, userName), Datafiniti (reviews.text, reviews.rating, ...) and common exports
#: (Review, Rate, Review Text, Positive Feedback Count). Exports from shops in German, French, Spanish, Italian
#: and Dutch get the names that mean one field only there ("Sterne", "Titre", "Reseña", "Datum"); a name that
#: can mean the review or its rating ("Bewertung", "note") is decided by its values in `core.io.load`.
ALIASES: dict[str, tuple[str, ...]] = {
    "review_id": ("review_id", "reviewid", "reviews.id", "id"),
    "text": ("text", "reviewtext", "review_text", "review_body", "review", "reviews.text", "review_content",
             "body", "content", "comment", "reviews",
             "rezension", "bewertungstext", "kommentar", "avis", "commentaire", "texte", "reseña", "comentario",
             "opinión", "recensione", "commento", "testo", "recensie"),
    "title": ("title_x", "summary", "review_title", "review_headline", "reviews.title", "headline", "title",
              "titel", "überschrift", "titre", "título", "titolo"),
    "rating": ("rating", "overall", "star_rating", "stars", "reviews.rating", "review_rating", "score", "rate",
               "ratings", "star",
               "sterne", "sternebewertung", "étoiles", "estrellas", "puntuación", "calificación", "stelle",
               "sterren"),
    "helpful_vote": ("helpful_vote", "helpful_votes", "vote", "helpful", "reviews.numhelpful", "thumbsupcount",
                     "positive_feedback_count", "useful", "helpful_count", "review_votes",
                     "hilfreich", "utile", "útil"),
    "verified_purchase": ("verified_purchase", "verified", "reviews.didpurchase"),
    "product_title": ("title_y", "product_title", "product_name"),
    "category": ("main_category", "category", "product_category", "main_cat", "categories"),
    "timestamp": ("timestamp", "unixreviewtime", "review_date", "reviews.date", "date", "time", "reviewtime",
                  "at", "created_at", "review_time", "datetime",
                  "datum", "fecha"),
    "user_id": ("user_id", "reviewerid", "customer_id", "reviews.username", "username", "reviewer_name",
                "author", "user_name"),
    "product_id": ("parent_asin", "asin", "product_id", "business_id", "item_id", "productid"),
}


def parse_mapping(items: list[str] | None) -> dict[str, str] | None:
    """``["rating=stars_given", "title=Titel"]`` as ``{"rating": "stars_given", "title": "Titel"}``."""
    items = [item for item in items or [] if item.strip()]
    if not items:
        return None
    mapping = {}
    for item in items:
        if "=" not in item:
            raise SchemaError(f"a column mapping is FIELD=COLUMN (for example text=body), got {item.strip()!r}")
        key, value = item.split("=", 1)
        mapping[key.strip()] = value.strip()
    return mapping


def canonical_name(source: str) -> str | None:
    """The canonical column a source name stands for (``"stars"`` -> ``"rating"``), or None."""
    key = column_key(source)
    return next((canonical for canonical, keys in _ALIAS_KEYS.items() if key in keys), None)


def column_key(name: str) -> str:
    """The part of a column name that name matching looks at: letters and digits, lower case, accents dropped
    ("Überschrift" and "uberschrift" match; before, the "Ü" was dropped with the separators)."""
    decomposed = unicodedata.normalize("NFKD", name.casefold())
    return "".join(ch for ch in decomposed if ch.isalnum() and not unicodedata.combining(ch))


#: `ALIASES` as matching sees them, in the same order (computed once, not per file or per API error).
_ALIAS_KEYS: dict[str, tuple[str, ...]] = {
    canonical: tuple(column_key(alias) for alias in aliases) for canonical, aliases in ALIASES.items()
}


def resolve_columns(
    source_columns: list[str], mapping: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Decide which source column feeds each canonical column.

    Parameters
    ----------
    source_columns
        Column names as they appear in the input.
    mapping
        Explicit ``canonical -> source`` choices; they win over the recognised names. An empty source
        (``rating=``) leaves that field out even when a column's name matches it.

    Returns
    -------
    dict
        ``canonical -> source`` for every canonical column that could be filled.

    Raises
    ------
    SchemaError
        When a mapping names an unknown canonical column or a missing source column, or no text column exists.
    """
    mapping = dict(mapping or {})
    left_out = {canonical for canonical, source in mapping.items() if not source}
    mapping = {canonical: source for canonical, source in mapping.items() if source}
    unknown = sorted((set(mapping) | left_out) - set(CANONICAL_COLUMNS))
    if unknown:
        raise SchemaError(
            f"unknown canonical column(s) in mapping: {', '.join(unknown)}; "
            f"expected some of {', '.join(CANONICAL_COLUMNS)}"
        )
    missing = sorted(src for src in mapping.values() if src not in source_columns)
    if missing:
        raise SchemaError(
            f"mapped column(s) not in the file: {', '.join(missing)}; the file has {', '.join(source_columns)}"
        )
    lowered: dict[str, str] = {}
    for col in source_columns:  # the first column wins when two names differ only in case or separators
        lowered.setdefault(column_key(col), col)
    used = set(mapping.values())
    resolved = dict(mapping)
    for canonical in CANONICAL_COLUMNS:
        if canonical in resolved or canonical in left_out:
            continue
        for key in _ALIAS_KEYS[canonical]:
            source = lowered.get(key)
            if source is not None and source not in used:
                resolved[canonical] = source
                used.add(source)
                break
    if "text" not in resolved:
        raise SchemaError(
            "no review text column found; expected one of "
            f"{', '.join(ALIASES['text'])} (got {', '.join(source_columns) or 'no columns'}). "
            "Pass a mapping such as --map text=YOUR_COLUMN."
        )
    return {canonical: resolved[canonical] for canonical in CANONICAL_COLUMNS if canonical in resolved}


class QuarantinedRow(BaseModel):
    """One input row set aside, with where it was and why."""

    model_config = ConfigDict(frozen=True)

    line: int = Field(description="1-based line in the file (record number for Parquet)")
    reason: str
    raw: dict[str, object] = Field(default_factory=dict, description="the row as read, untouched")


class ValidationReport(BaseModel):
    """What loading a batch found. Serialises to the JSON printed by ``workbench ingest --json``."""

    source: str
    format: str
    rows_read: int
    rows_kept: int
    rows_quarantined: int
    duplicates: int = Field(description="kept rows that repeat an earlier row exactly (flagged, not removed)")
    columns: dict[str, str] = Field(description="canonical name -> source column")
    missing_columns: list[str] = Field(description="canonical columns the input does not have")
    extra_columns: list[str]
    quarantine_reasons: dict[str, int] = Field(default_factory=dict)
    quarantined: list[QuarantinedRow] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list,
                             description="how the file was read where it was not plain: encoding, delimiter, "
                                         "rating scale, date order, repeated ids")
    batch: str | None = None

    def unused_columns_line(self) -> str | None:
        """The columns left unread while canonical ones are missing, and how to map one; None if not both."""
        if not (self.missing_columns and self.extra_columns):
            return None
        shown = ", ".join(self.extra_columns[:8]) + (", ..." if len(self.extra_columns) > 8 else "")
        return (f"columns not used: {shown}; if one of them holds a missing field ({', '.join(self.missing_columns)}), "
                "map it as FIELD=COLUMN (--map in the CLI, the column mapping on the Data page)")

    def reading_lines(self) -> list[str]:
        """The columns left unused (with how to map one) and the notes on how the file was read."""
        unused = self.unused_columns_line()
        return ([unused] if unused else []) + [f"note: {note}" for note in self.notes]

    def summary_lines(self) -> list[str]:
        """Short human-readable lines for terminals and the workbench."""
        lines = [
            f"{self.source} ({self.format}): {self.rows_read} rows read, {self.rows_kept} kept, "
            f"{self.rows_quarantined} quarantined, {self.duplicates} exact duplicates flagged",
            "columns: " + ", ".join(f"{k} <- {v}" for k, v in self.columns.items()),
        ]
        if self.missing_columns:
            lines.append("not in this file: " + ", ".join(self.missing_columns))
        lines.extend(self.reading_lines())
        for reason, count in sorted(self.quarantine_reasons.items(), key=lambda kv: -kv[1]):
            lines.append(f"quarantined {count}: {reason}")
        return lines
