"""Item text: the string the sentence encoder embeds for one catalogue item.

Pure Python (no JAX import), so the reference script can build the same texts
in an environment that only has sentence-transformers.

Template. For each field of `ItemTextConfig.fields`, in that order:
  1. take `meta[field]` (a str; empty strings allowed),
  2. collapse runs of whitespace (newlines, tabs) to one space and strip,
  3. for 'description' only: keep the first `max_description_words` words
     (None: all), then the first `max_description_chars` characters (None:
     all), cut back to the last whole word and stripped,
  4. skip the field if the value is now empty,
  5. render it as `f'{Label}: {value}'` (Label = field name capitalised:
     Title, Categories, Brand, Description) or as the bare value when
     `field_labels` is False.
The rendered fields are joined with '\n'. Example with the defaults:
  'Title: Stanley TRA708SST 1/2-Inch HD Stainless Steel Narrow Crown Staple.\n'
  'Categories: Industrial & Scientific,Industrial Hardware,...\n'
  'Brand: Stanley\n'
  'Description: STAPLE STNLSS1/2 NARROW. Stanley Hand Tools is ...'
Values are otherwise verbatim: the BERT tokenizer splits punctuation, so
'a,b' and 'a, b' give the same tokens and need no normalising here.
"""
import dataclasses
from typing import Mapping, Optional, Sequence

from vstar_jax import errors

ITEM_TEXT_FIELDS = ('title', 'description', 'brand', 'categories')


class ItemTextError(errors.DataError):
  """Bad item metadata; str(error) is one line naming the item and field."""


@dataclasses.dataclass(frozen=True)
class ItemTextConfig:
  """How to render an item's metadata as text (see the module docstring).

  Attributes:
    fields: fields to include, in order; a subset of ITEM_TEXT_FIELDS.
    max_description_words: keep at most this many description words; None
      keeps all.
    max_description_chars: then keep at most this many characters (cut at a
      word boundary); None keeps all.
    field_labels: prefix each value with 'Label: '.
  """
  fields: tuple[str, ...] = ('title', 'categories', 'brand', 'description')
  max_description_words: Optional[int] = 64
  max_description_chars: Optional[int] = None
  field_labels: bool = True

  def __post_init__(self):
    unknown = [f for f in self.fields if f not in ITEM_TEXT_FIELDS]
    if unknown or not self.fields or len(set(self.fields)) != len(
        self.fields):
      raise ItemTextError(
          f'ItemTextConfig.fields={self.fields!r}: need distinct names from '
          f'{ITEM_TEXT_FIELDS}')
    for name in ('max_description_words', 'max_description_chars'):
      limit = getattr(self, name)
      if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ItemTextError(
            f'ItemTextConfig.{name}={limit!r}: need a positive int or None')


def _truncate_description(value: str, config: ItemTextConfig) -> str:
  if config.max_description_words is not None:
    value = ' '.join(value.split(' ')[:config.max_description_words])
  if (config.max_description_chars is not None
      and len(value) > config.max_description_chars):
    cut = value[:config.max_description_chars + 1]
    # Back off to the last space so no word is cut in half (unless the
    # first word alone is longer than the limit).
    space = cut.rfind(' ')
    value = cut[:space] if space > 0 else cut[:-1]
  return value.strip()


def item_text(item_id: str, meta: Mapping[str, object],
              config: ItemTextConfig = ItemTextConfig()) -> str:
  """Renders one item's metadata dict as text (template: module docstring).

  Args:
    item_id: the item's key, only used in error messages.
    meta: the item's metadata; must hold a str for every configured field.
    config: fields, their order and the description limits.

  Returns:
    The item text, never empty.

  Raises:
    ItemTextError: a configured field is missing or not a str, or every
      configured field is empty.
  """
  if not isinstance(meta, Mapping):
    raise ItemTextError(
        f'item {item_id!r}: metadata is a {type(meta).__name__}, not a dict')
  parts = []
  for field in config.fields:
    if field not in meta:
      raise ItemTextError(f'item {item_id!r}: missing field {field!r}')
    value = meta[field]
    if not isinstance(value, str):
      raise ItemTextError(
          f'item {item_id!r}: field {field!r} is a {type(value).__name__},'
          ' not a str')
    value = ' '.join(value.split())
    if field == 'description':
      value = _truncate_description(value, config)
    if value:
      parts.append(
          f'{field.capitalize()}: {value}' if config.field_labels else value)
  if not parts:
    raise ItemTextError(
        f'item {item_id!r}: fields {config.fields!r} are all empty')
  return '\n'.join(parts)


def item_texts(item_meta: Mapping[str, Mapping[str, object]],
               item_ids: Sequence[str],
               config: ItemTextConfig = ItemTextConfig()) -> list[str]:
  """Texts of `item_ids` (in that order) from `{item_id: meta}`."""
  texts = []
  for item_id in item_ids:
    if item_id not in item_meta:
      raise ItemTextError(f'item {item_id!r}: not in the item metadata')
    texts.append(item_text(item_id, item_meta[item_id], config))
  return texts
