"""KLUE-RE relation extraction: a sentence with a subject and an object entity -> one of the relations.

Records hold ``sentence``, ``subject_entity`` / ``object_entity`` (``word``, ``start_idx``, ``end_idx``
inclusive, ``type``) as objects (KLUE JSON, HF datasets) or as their string form (the competition CSVs:
``"{'word': '비틀즈', 'start_idx': 24, 'end_idx': 26, 'type': 'ORG'}"``). ``marking`` puts the entities in
the text (Zhou & Chen 2021, "An Improved Baseline for Sentence-level Relation Extraction"):

* ``none``: the sentence as it is;
* ``entity_marker``: ``<subj>비틀즈</subj>``, ``<obj>조지 해리슨</obj>`` (four new special tokens);
* ``typed_entity_marker``: ``<S:ORG>비틀즈</S:ORG>``, ``<O:PER>...</O:PER>`` (four tokens per entity type);
* ``typed_entity_marker_punct``: ``@*단체*비틀즈@``, ``#^사람^조지 해리슨#`` (existing punctuation; the type
  is written in ``type_words``' language, ``사람`` or ``person``, or as its code, with ``type_names`` over it;
  ``punct_markers`` sets the characters, e.g. ``&`` for ``#``, which a WordPiece vocabulary also uses in ``##``).

Markers go in with no spaces, as in KLUE's baseline. A particle glued to the entity (``비틀즈@가``) would
then start a new word; ``fix_particles`` gives it its word-continuation piece (``##가``) when the
vocabulary has one, as KLUE's ``fix_tokenization_error`` does. Every feature carries the position of both
entities' first token (the start marker, or the entity's first token with ``marking: none``) for
entity-start pooling (``model.pooling: entity``).
"""

from __future__ import annotations

import ast
import json
import logging
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from core.errors import DataFormatError
from core.files import write_json
from datamodules.classification import (
    FEATURE_KEYS,
    MISSING,
    ClassificationDataModule,
    ClassificationExample,
    Entity,
    lookup,
)

log = logging.getLogger(__name__)

MARKINGS = ("none", "entity_marker", "typed_entity_marker", "typed_entity_marker_punct")
POOLINGS = ("cls", "entity")
ENTITY_KEYS = ("word", "start_idx", "end_idx", "type")
KLUE_TYPES = ("PER", "ORG", "LOC", "DAT", "POH", "NOH")
PUNCT_MARKERS = {"subject": ("@", "*"), "object": ("#", "^")}  # Zhou & Chen's, when the config gives none


def parse_entity(value: Any, src: Path, record: str, field: str) -> dict[str, Any]:
    """An entity object, or its JSON / Python-literal string form (never evaluated as code)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            try:
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                raise DataFormatError(src, record, f"{field} is a string that is not an entity object ({value[:60]!r})",
                                      "write it as {'word': ..., 'start_idx': ..., 'end_idx': ..., 'type': ...}") from None
    if not isinstance(value, Mapping) or any(key not in value for key in ENTITY_KEYS):
        keys = sorted(value) if isinstance(value, Mapping) else type(value).__name__
        raise DataFormatError(src, record, f"{field} must have {list(ENTITY_KEYS)} (it has {keys})",
                              "give each entity its word, start_idx, end_idx (inclusive) and type")
    try:
        start, end = int(value["start_idx"]), int(value["end_idx"])
    except (TypeError, ValueError):
        raise DataFormatError(src, record, f"{field}: start_idx / end_idx must be integers", "correct the record") from None
    return {"word": str(value["word"]), "start_idx": start, "end_idx": end, "type": str(value["type"])}


def is_glued(sentence: str, position: int) -> bool:
    """Whether the character at ``position`` continues the word before it (a particle: letters or digits)."""
    return position < len(sentence) and unicodedata.category(sentence[position])[0] in "LN"


class KlueREDataModule(ClassificationDataModule):
    """KLUE-RE records, entity marking, entity-start positions; everything else as ``ClassificationDataModule``."""

    def __init__(
        self,
        tokenizer: Any,
        sentence_field: str = "sentence",
        subject_field: str = "subject_entity",
        object_field: str = "object_entity",
        marking: str = "typed_entity_marker_punct",
        entity_query: bool = False,
        entity_types: Sequence[str] = KLUE_TYPES,
        type_names: Mapping[str, str] | None = None,
        type_words: str | None = None,
        type_word_sets: Mapping[str, Mapping[str, str]] | None = None,
        punct_markers: Mapping[str, Sequence[str]] | None = None,
        fix_particles: bool = True,
        pooling: str = "cls",
        no_relation_label: str | None = "no_relation",
        **kwargs: Any,
    ) -> None:
        if marking not in MARKINGS:
            raise ValueError(f"datamodule.marking={marking!r} is unknown: choose one of {', '.join(MARKINGS)}.")
        if pooling not in POOLINGS:
            raise ValueError(f"datamodule.pooling={pooling!r} is unknown: choose one of {', '.join(POOLINGS)}.")
        # make_example reads these while the parent's __init__ reads the training file
        self.subject_field, self.object_field = subject_field, object_field
        self.marking = marking
        self.entity_query = entity_query
        self.entity_types = list(entity_types)
        self.type_names = self.resolve_type_names(type_names, type_words, type_word_sets)
        self.punct_markers = self.resolve_punct_markers(punct_markers)
        self.fix_particles = fix_particles
        self.pooling = pooling
        self.no_relation_label = no_relation_label
        kwargs.pop("text_fields", None)
        super().__init__(tokenizer, text_fields=[sentence_field], **kwargs)
        if no_relation_label is not None and no_relation_label not in self.label_ids:
            log.warning("datamodule.no_relation_label=%r is not a class: micro_f1 then counts every class",
                        no_relation_label)
        self.continuation = self._add_marker_tokens()
        self._type_table: dict[str, list[str]] | None = None

    @staticmethod
    def resolve_type_names(type_names: Mapping[str, str] | None, type_words: str | None,
                           type_word_sets: Mapping[str, Mapping[str, str]] | None) -> dict[str, str]:
        """The word of each type code: ``type_word_sets[type_words]`` (``code``: the codes themselves), then
        ``type_names`` over it."""
        sets = dict(type_word_sets or {})
        if type_words not in (None, "code") and type_words not in sets:
            raise ValueError(f"datamodule.type_words={type_words!r} is unknown: choose code or one of "
                             f"{', '.join(sets) or '(none: datamodule.type_word_sets is empty)'}.")
        base = dict(sets[type_words]) if type_words not in (None, "code") else {}
        return {**base, **dict(type_names or {})}

    @staticmethod
    def resolve_punct_markers(markers: Mapping[str, Sequence[str]] | None) -> dict[str, tuple[str, str]]:
        """``{subject: [outer, inner], object: [outer, inner]}``: four distinct non-empty marker strings."""
        out = {role: tuple(str(c) for c in (markers or {}).get(role, PUNCT_MARKERS[role])) for role in PUNCT_MARKERS}
        chars = [c for pair in out.values() for c in pair]
        if any(len(pair) != 2 for pair in out.values()) or "" in chars or len(set(chars)) != 4:
            raise ValueError(f"datamodule.punct_markers={markers}: give subject: [outer, inner] and object: "
                             "[outer, inner], four different non-empty strings (e.g. subject: ['@', '*'], "
                             "object: ['&', '^']).")
        return out  # type: ignore[return-value]

    # ------------------------------------------------------------------ records

    def make_example(self, row: Mapping[str, Any], index: int, src: Path, labels: str,
                     class_names: Sequence[str] | None) -> ClassificationExample:
        record = self.record_id(row, index, src)
        sentence = self.text(row, self.text_fields[0], src, record)
        entities: list[Entity] = []
        for role, field in (("subject", self.subject_field), ("object", self.object_field)):
            value = lookup(row, field)
            if value is MISSING:
                raise DataFormatError(src, record, f"no {role} entity field {field!r} (its keys: {sorted(row)[:10]})",
                                      f"set datamodule.{role}_field to the record's key")
            entity = parse_entity(value, src, record, field)
            start, end = entity["start_idx"], entity["end_idx"] + 1
            if sentence[start:end] != entity["word"]:
                raise DataFormatError(
                    src, record,
                    f"{field} word {entity['word']!r} is not at start_idx..end_idx {start}..{end - 1} "
                    f"(the sentence has {sentence[start:end]!r} there)",
                    "correct the offsets (end_idx is inclusive, offsets count characters of the sentence)",
                )
            if self.marking == "typed_entity_marker" and entity["type"] not in self.entity_types:
                raise DataFormatError(src, record, f"{field} type {entity['type']!r} is not in datamodule.entity_types "
                                      f"{self.entity_types}", "add it to datamodule.entity_types")
            entities.append({"role": role, "word": entity["word"], "start": start, "end": end,
                             "type": entity["type"], "text_index": 0})
        (a, b) = sorted((e["start"], e["end"]) for e in entities)
        if b[0] < a[1]:
            raise DataFormatError(src, record, "the subject and object entities overlap",
                                  "check the offsets: relation extraction needs two separate spans")
        return {"id": record, "texts": [sentence], "label": self.label(row, src, record, labels, class_names),
                "entities": entities}

    # ------------------------------------------------------------------ marking

    def markers(self, entity: Entity) -> tuple[str, str]:
        role, code = entity["role"], entity["type"]
        if self.marking == "entity_marker":
            tag = "subj" if role == "subject" else "obj"
            return f"<{tag}>", f"</{tag}>"
        if self.marking == "typed_entity_marker":
            tag = "S" if role == "subject" else "O"
            return f"<{tag}:{code}>", f"</{tag}:{code}>"
        if self.marking == "typed_entity_marker_punct":
            outer, inner = self.punct_markers[role]
            return f"{outer}{inner}{self.type_names.get(code, code)}{inner}", outer
        return "", ""

    def _add_marker_tokens(self) -> str | None:
        """Add the marker tokens the tokenizer lacks; return its word-continuation prefix (``##``) or None."""
        new: list[str] = []
        if self.marking == "entity_marker":
            new = ["<subj>", "</subj>", "<obj>", "</obj>"]
        elif self.marking == "typed_entity_marker":
            new = [f"{o}{t}:{c}>" for c in self.entity_types for t in ("S", "O") for o in ("<", "</")]
        special = [t for t in new if t not in self.tokenizer.get_vocab()]
        if special:
            self.tokenizer.add_tokens(special, special_tokens=True)
        if self.marking == "typed_entity_marker_punct":  # a tokenizer trained on plain sentences may lack "@*#^"
            unk = self.tokenizer.unk_token_id
            chars = [c for pair in self.punct_markers.values() for c in pair]
            missing = [c for c in chars if unk in self.tokenizer(c, add_special_tokens=False)["input_ids"]]
            if missing:
                self.tokenizer.add_tokens(missing)
                special += missing
        if special:
            log.info("entity marking %s: added %d tokens to the tokenizer (%s ...)", self.marking, len(special),
                     special[:4])
        model = getattr(getattr(self.tokenizer, "backend_tokenizer", None), "model", None)
        prefix = getattr(model, "continuing_subword_prefix", None)
        if self.fix_particles and self.marking != "none" and not prefix:
            log.info("fix_particles: the tokenizer has no word-continuation prefix; particles are left as tokenised")
        return prefix or None

    def mark(self, ex: ClassificationExample) -> tuple[str, dict[str, tuple[int, int, bool]]]:
        """The marked sentence and, per role: (start marker position, position after the end marker, glued)."""
        sentence = ex["texts"][0]
        pieces, cursor, length, info = [], 0, 0, {}
        for entity in sorted(ex["entities"], key=lambda e: e["start"]):
            start_marker, end_marker = self.markers(entity)
            before = sentence[cursor:entity["start"]]
            begin = length + len(before)
            pieces += [before, start_marker, sentence[entity["start"]:entity["end"]], end_marker]
            length = begin + len(start_marker) + entity["end"] - entity["start"] + len(end_marker)
            info[entity["role"]] = (begin, length, is_glued(sentence, entity["end"]))
            cursor = entity["end"]
        pieces.append(sentence[cursor:])
        return "".join(pieces), info

    # ------------------------------------------------------------------ features

    def encode(self, examples: Sequence[ClassificationExample]) -> dict[str, list[Any]]:
        marked = [self.mark(ex) for ex in examples]
        sentences = [text for text, _ in marked]
        if self.entity_query:  # KLUE baseline: "subject [SEP] object" as the first segment
            sep = self.tokenizer.sep_token or " "
            queries = [sep.join(e["word"] for e in sorted(ex["entities"], key=lambda e: e["role"] != "subject"))
                       for ex in examples]
            encoded = self.tokenizer(queries, sentences, truncation="only_second", max_length=self.max_seq_length,
                                     return_offsets_mapping=True)
        else:
            encoded = self.tokenizer(sentences, truncation=True, max_length=self.max_seq_length,
                                     return_offsets_mapping=True)
        segment = 1 if self.entity_query else 0
        vocab = self.tokenizer.get_vocab()
        columns = {key: list(value) for key, value in encoded.items() if key != "offset_mapping"}
        columns["subject_index"], columns["object_index"] = [], []
        truncated = fixed = 0
        for i, (_, info) in enumerate(marked):
            offsets, sequence = encoded["offset_mapping"][i], encoded.sequence_ids(i)
            ids = columns["input_ids"][i] = list(columns["input_ids"][i])
            for role in ("subject", "object"):
                begin, after, glued = info[role]
                index = next((j for j, (s, e) in enumerate(offsets) if sequence[j] == segment and s <= begin < e), None)
                truncated += index is None
                columns[f"{role}_index"].append(index if index is not None else 0)  # cut off: pool [CLS]
                if not (self.fix_particles and self.continuation and glued and self.marking != "none"):
                    continue
                j = next((j for j, (s, _) in enumerate(offsets) if sequence[j] == segment and s == after), None)
                if j is None:
                    continue
                token = self.tokenizer.convert_ids_to_tokens(ids[j])
                if not token.startswith(self.continuation) and self.continuation + token in vocab:
                    ids[j] = vocab[self.continuation + token]
                    fixed += 1
        if truncated:
            log.warning("%d entity starts fell beyond max_seq_length=%d: those features pool [CLS] instead",
                        truncated, self.max_seq_length)
        log.debug("fix_particles: %d particles re-attached as word continuations", fixed)
        return columns

    def feature_keys(self) -> tuple[str, ...]:
        return (*FEATURE_KEYS, "subject_index", "object_index")

    # ------------------------------------------------------------------ entity-type constraint

    @staticmethod
    def type_pair(example: ClassificationExample) -> str:
        """``SUBJECT_TYPE|OBJECT_TYPE`` of an example, the key of the constraint table."""
        types = {e["role"]: e["type"] for e in example["entities"]}
        return f"{types.get('subject')}|{types.get('object')}"

    def type_constraints(self) -> dict[str, list[str]]:
        """Relations seen in training for each (subject type, object type) pair (K-fold: the training folds only);
        written to ``type_constraints.json`` in the run dir."""
        if self._type_table is None:
            if not self.files["train"]:
                raise ValueError("model.type_constraint learns which relations each entity-type pair allows from "
                                 "datamodule.train_file: set it (the training file of the checkpoint).")
            table: dict[str, set[str]] = {}
            for ex in self.train_and_validation()[0] if self.n_folds is not None else self.load("train", "all"):
                table.setdefault(self.type_pair(ex), set()).add(str(ex["label"]))
            self._type_table = {pair: sorted(labels) for pair, labels in sorted(table.items())}
            log.info("type constraint: %d entity-type pairs seen in training", len(self._type_table))
            if self.output_dir is not None and (self.trainer is None or self.trainer.is_global_zero):
                write_json(self.output_dir / "type_constraints.json", self._type_table)
        return self._type_table

    def allowed_labels(self, split: str) -> list[list[bool]]:
        """Per example of ``split``, per class: whether training saw that relation for its entity-type pair.

        ``no_relation`` is always allowed, and so is every class for a type pair training never saw (no evidence
        either way).
        """
        table = self.type_constraints()
        rows = []
        for ex in self.eval_examples(split):
            seen = table.get(self.type_pair(ex))
            if seen is None:
                rows.append([True] * len(self.labels))
                continue
            allowed = {*seen, self.no_relation_label}
            rows.append([name in allowed for name in self.labels])
        return rows
