"""Real human-translated parallel text from Debian packages, prepared offline.

`apt-get download` fetches the packages (no install, no root after
`apt-get update`), `dpkg-deb -x` unpacks them into a cache directory, and the
extractors below turn them into deduplicated (source, target, origin) triples
written as one TSV file per corpus. A second `prepare` finds the TSV and is
instant.

* ``debian:de-en``: the Ding dictionary's example sentences (`trans-de-en`)
  plus LibreOffice help paragraphs aligned by (file, paragraph id)
  (`libreoffice-help-en-us` + `libreoffice-help-de`).
* ``debian:en-es``: the World English Bible against Reina-Valera 1909
  (`sword-text-web`, `sword-text-sparv`), verses aligned by reference.
"""

import fcntl
import gettext
import html.parser
import logging
import os
from pathlib import Path
import re
import struct
import subprocess
import zlib

log = logging.getLogger(__name__)

CORPORA = {
    "de-en": ("trans-de-en", "libreoffice-help-en-us", "libreoffice-help-de",
              "gcc-12-locales", "util-linux-locales"),
    "en-es": ("sword-text-web", "sword-text-sparv"),
}


MAX_WORDS = 150  # longer "verses" are book introductions and index entries


CACHE_ENV = "SEQ2SEQ_JAX_CACHE"


def cache_dir() -> Path:
  return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "seq2seq_jax"))


def fetch_packages(packages, root: Path) -> Path:
  """Downloads and unpacks `packages` under `root`; returns the unpacked tree."""
  debs, tree = root / "debs", root / "tree"
  debs.mkdir(parents=True, exist_ok=True)
  for name in packages:
    if list(debs.glob(f"{name}_*.deb")):
      continue
    proc = subprocess.run(["apt-get", "download", name], cwd=debs, capture_output=True,
                          text=True)
    if proc.returncode != 0:
      raise RuntimeError(f"apt-get download {name} failed (run `apt-get update` first?): "
                         f"{proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ''}")
  for deb in sorted(debs.glob("*.deb")):
    marker = tree / f".{deb.name}.done"
    if not marker.exists():
      tree.mkdir(parents=True, exist_ok=True)
      subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True)
      marker.touch()
  return tree


# ----- Ding (trans-de-en) -----

_ANNOTATION = re.compile(r"\{[^}]*\}|\[[^\]]*\]|<[^>]*>")
_SENTENCE = re.compile(r"^[A-ZÄÖÜ\"'„“‘].*[.?!]$")


def _clean(text: str) -> str:
  return " ".join(_ANNOTATION.sub(" ", text).split())


def ding_sentences(lines):
  """Example sentences of the Ding dictionary: (german, english) pairs.

  A line is `german :: english`; ` | ` separates sub-entries (the same number
  on both sides), `; ` alternatives (the first is kept). Kept: sub-entries
  whose both sides are capitalised, end in .?! and have 3+ words.
  """
  for line in lines:
    if line.startswith("#") or " :: " not in line:
      continue
    german, english = line.rstrip("\n").split(" :: ", 1)
    de_parts, en_parts = german.split(" | "), english.split(" | ")
    if len(de_parts) != len(en_parts):
      continue
    for de, en in zip(de_parts, en_parts):
      de, en = _clean(de.split("; ")[0]), _clean(en.split("; ")[0])
      if (_SENTENCE.match(de) and _SENTENCE.match(en) and len(de.split()) >= 3
          and len(en.split()) >= 3):
        yield de, en


# ----- LibreOffice help -----

class _Paragraphs(html.parser.HTMLParser):
  """Text of the elements whose id starts with par_ or hd_, by id."""

  def __init__(self):
    super().__init__(convert_charrefs=True)
    self.texts, self._stack = {}, []

  def handle_starttag(self, tag, attrs):
    ident = dict(attrs).get("id") or ""
    if ident.startswith(("par_", "hd_")):
      self._stack.append([tag, ident, []])

  def handle_endtag(self, tag):
    if self._stack and self._stack[-1][0] == tag:
      _, ident, parts = self._stack.pop()
      text = " ".join("".join(parts).split())
      if text:
        self.texts[ident] = text
      if self._stack:
        self._stack[-1][2].append(text)

  def handle_data(self, data):
    if self._stack:
      self._stack[-1][2].append(data)


_SPLIT = re.compile(r"(?<=[.?!])\s+(?=[A-ZÄÖÜ0-9])")


def libreoffice_pairs(tree: Path, src_lang="en-US", tgt_lang="de"):
  """(english, german) sentences of help paragraphs aligned by (file, id).

  Aligned paragraphs are split into sentences and kept where both sides have
  the same number of sentences (and at least 3 words each).
  """
  base = tree / "usr" / "share" / "libreoffice" / "help"
  for src_file in sorted((base / src_lang).rglob("*.html")):
    tgt_file = base / tgt_lang / src_file.relative_to(base / src_lang)
    if not tgt_file.exists():
      continue
    src_par, tgt_par = _Paragraphs(), _Paragraphs()
    src_par.feed(src_file.read_text(encoding="utf-8", errors="replace"))
    tgt_par.feed(tgt_file.read_text(encoding="utf-8", errors="replace"))
    for ident, src_text in src_par.texts.items():
      tgt_text = tgt_par.texts.get(ident)
      if not tgt_text or tgt_text == src_text:
        continue
      src_sents, tgt_sents = _SPLIT.split(src_text), _SPLIT.split(tgt_text)
      if len(src_sents) != len(tgt_sents):
        continue
      for s, t in zip(src_sents, tgt_sents):
        if len(s.split()) >= 3 and len(t.split()) >= 3:
          yield s, t


# ----- gettext catalogs -----

_FORMAT = re.compile(r"%|\{|\}|\\|<|>|`|\n|\t|--|_[A-Z]|\$|=")


def gettext_pairs(tree: Path, lang="de"):
  """(english msgid, translation) of the .mo catalogs of `lang`, sentence-like only.

  Format strings, option listings and markup are dropped; kept where both
  sides have 3+ words and the translation differs from the original.
  """
  for mo in sorted((tree / "usr" / "share" / "locale" / lang / "LC_MESSAGES").glob("*.mo")):
    with mo.open("rb") as f:
      catalog = gettext.GNUTranslations(f)._catalog
    for msgid, msgstr in sorted(catalog.items(), key=lambda kv: str(kv[0])):
      if not isinstance(msgid, str) or not msgid or not msgstr or msgid == msgstr:
        continue
      if _FORMAT.search(msgid) or _FORMAT.search(msgstr) or not msgid[:1].isalpha():
        continue
      if len(msgid.split()) >= 3 and len(msgstr.split()) >= 3:
        yield msgid, msgstr


# ----- SWORD zText modules -----

_OSIS_NOTE = re.compile(r"<note\b.*?</note>", re.S)
_OSIS_TAG = re.compile(r"<[^>]+>")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?])")


def sword_verses(module_dir: Path):
  """`{(testament, verse index): text}` of a SWORD zText module directory.

  `ot.bzs` / `nt.bzs` hold blocks (offset, size, uncompressed size as
  `<III`), `.bzv` verses (block, offset, size as `<IIH`), `.bzz` zlib blocks.
  OSIS markup is stripped.
  """
  verses = {}
  for testament in ("ot", "nt"):
    bzs, bzv, bzz = (module_dir / f"{testament}.{ext}" for ext in ("bzs", "bzv", "bzz"))
    if not bzs.exists():
      continue
    block_index = bzs.read_bytes()
    verse_index = bzv.read_bytes()
    data = bzz.read_bytes()
    cache = {}
    for i in range(len(verse_index) // 10):
      block, offset, size = struct.unpack_from("<IIH", verse_index, i * 10)
      if size == 0:
        continue
      if block not in cache:
        start, length, _ = struct.unpack_from("<III", block_index, block * 12)
        cache = {block: zlib.decompress(data[start:start + length])}
      raw = cache[block][offset:offset + size].decode("utf-8", errors="replace")
      text = " ".join(_OSIS_TAG.sub(" ", _OSIS_NOTE.sub(" ", raw)).split())
      text = _SPACE_BEFORE_PUNCT.sub(r"\1", text)
      if text:
        verses[(testament, i)] = text
  return verses


def bible_pairs(tree: Path, src_module="engWEB2015eb", tgt_module="spaRV1909eb"):
  base = tree / "usr" / "share" / "sword" / "modules" / "texts" / "ztext"
  src, tgt = sword_verses(base / src_module), sword_verses(base / tgt_module)
  for key in sorted(set(src) & set(tgt)):
    yield src[key], tgt[key]


# ----- prepare -----

def _write_tsv(path: Path, triples) -> int:
  seen, count, too_long = set(), 0, 0
  tmp = path.with_suffix(".tmp")
  with tmp.open("w", encoding="utf-8") as f:
    for src, tgt, origin in triples:
      src, tgt = " ".join(src.split()), " ".join(tgt.split())
      if not src or not tgt or (src, tgt) in seen:
        continue
      if max(len(src.split()), len(tgt.split())) > MAX_WORDS:
        too_long += 1
        continue
      seen.add((src, tgt))
      f.write(f"{src}\t{tgt}\t{origin}\n")
      count += 1
  tmp.replace(path)  # a killed prepare leaves no half-written corpus
  if too_long:
    log.info("%s: dropped %d pairs over %d words", path.name, too_long, MAX_WORDS)
  return count


def prepare(pair: str, root: Path | None = None) -> Path:
  """The TSV file of corpus `pair` ("de-en" or "en-es"), built once and cached."""
  if pair not in CORPORA:
    raise ValueError(f"unknown Debian corpus {pair!r}; valid: "
                     f"{', '.join('debian:' + p for p in CORPORA)}")
  root = Path(root or cache_dir()) / "debian"
  out = root / f"{pair}.tsv"
  if out.exists():
    return out
  try:
    root.mkdir(parents=True, exist_ok=True)
    lock = (root / f"{pair}.lock").open("w")
  except OSError as e:  # e.g. a read-only file system: before, a bare "[Errno 30]"
    raise OSError(f"cannot prepare debian:{pair} in the cache {root} ({e.strerror or e}): set "
                  f"{CACHE_ENV} to a writable directory") from None
  # Sweep members start together: one prepares, the others wait and then read its file.
  with lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not out.exists():
      _build(pair, root, out)
  return out


def _build(pair: str, root: Path, out: Path) -> None:
  tree = fetch_packages(CORPORA[pair], root)
  if pair == "de-en":
    ding = tree / "usr" / "share" / "trans" / "de-en"
    with ding.open(encoding="utf-8", errors="replace") as f:
      triples = [(de, en, "ding") for de, en in ding_sentences(f)]
    triples += [(de, en, "libreoffice") for en, de in libreoffice_pairs(tree)]
    triples += [(de, en, "gettext") for en, de in gettext_pairs(tree)]
  else:
    triples = [(en, es, "bible") for en, es in bible_pairs(tree)]
  count = _write_tsv(out, triples)
  log.info("prepared debian:%s: %d unique pairs in %s", pair, count, out)
