"""One category's incident window as a process knows it (``Window``): its entries' tokens as bits
of the window's own vocabulary, compared with a new complaint's in one numpy step, and which of
them a note's window holds, worked out from each entry's score and note number instead of read.

What the window is, and how a complaint is noted in it and decided on: ``router.incidents``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Tokens two texts share at least to describe one fault (and a text has at least to be compared).
MIN_TOKENS = 3
#: customer id, tokens, the tokens as bits of the window's vocabulary, how many, complaint id,
#: score (ms: its place in the window), the number of a note it had landed by (``PENDING``: not yet)
Entry = tuple[str, frozenset[str], int, int, bytes, int, int]
_WORD = np.dtype("<u8")
#: The note number of an entry this process noted whose note has not answered yet: never in a
#: window (an entry that never lands is never compared).
PENDING = 2 ** 62


class Window:
    """One category's window as this process knows it: complaint id -> entry.

    Each entry's tokens are also bits of one int, a bit per token of this window's own vocabulary,
    and those bits a column of 64-bit words in one matrix (a row of words per 64 tokens):
    comparing a new complaint with the window's ~300 is then an AND and a bit count of the words
    its tokens are in (numpy) instead of a set intersection per entry, with the same answers
    (``incidents.same_fault``'s rule on the same counts). The vocabulary is built again, most shared tokens first,
    whenever the entries are pruned to the window, so its size stays that of the tokens of the
    complaints kept. Columns are written when the window is next compared with (``_sync``); a
    vocabulary that outgrows the words gets more rows of them (the columns written have no bit of
    the new tokens: nothing is written again). Each column's score and note number are kept
    beside it: which entries a note's window holds is worked out here (``held``), not read."""

    def __init__(self) -> None:
        self.entries: dict[bytes, Entry] = {}
        self.vocabulary: dict[str, int] = {}
        self._rows: dict[bytes, int] = {}  # id -> its row of the matrix
        self._by_row: list[Entry] = []
        self._matrix = np.zeros((1, 0), dtype=_WORD)  # words x entries
        self._sizes = np.zeros(0, dtype=np.int64)  # each entry's number of tokens
        self._scores = np.zeros(0, dtype=np.int64)  # each entry's score
        self._seqs = np.zeros(0, dtype=np.int64)  # each entry's note number
        self._unwritten: list[bytes] = []  # ids added since the matrix was last written

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, cid: bytes) -> bool:
        return cid in self.entries

    def bits(self, toks: frozenset[str]) -> int:
        vocabulary, bits = self.vocabulary, 0
        for token in toks:
            bit = vocabulary.get(token)
            if bit is None:
                bit = vocabulary[token] = len(vocabulary)
            bits |= 1 << bit
        return bits

    def add(self, cid: bytes, customer: str, toks: frozenset[str], score: int, seq: int = PENDING) -> None:
        self.entries[cid] = (customer, toks, self.bits(toks), len(toks), cid, score, seq)
        self._unwritten.append(cid)

    def landed(self, noted: list[Any], seq: int) -> None:
        """Entries landed by note ``seq`` at the latest, with their scores in the window (``noted``:
        id, score, ...): this process's own, pending till their note answered, or ones known as
        landed by a later note. An entry known here at another score takes the window's."""
        for i in range(0, len(noted) - 1, 2):
            cid, score = noted[i], int(float(noted[i + 1]))
            entry = self.entries.get(cid)
            if entry is None or (entry[5] == score and entry[6] <= seq):
                continue
            self.entries[cid] = entry = (*entry[:5], score, min(seq, entry[6]) if entry[5] == score else seq)
            row = self._rows.get(cid)
            if row is not None:
                self._by_row[row] = entry
                self._scores[row], self._seqs[row] = score, entry[6]

    def held(self, seq: int, start: int, floor: tuple[bytes, int] | None) -> np.ndarray:
        """Which columns a note's window held (a mask): the entries landed by note ``seq``, younger
        than ``start`` and, the window being full, not older than its oldest entry ``floor`` (id,
        score; among equal scores the larger id is the newer, as Redis orders them). The entries
        of a window are the newest kept younger than its start, and an entry leaves it only by
        time or by rank (below that oldest entry), and keeps its score: so, if as many are found
        as the window held, they are its entries (``scripts.INCIDENT_NOTE_FN``)."""
        self._sync()
        n = len(self._by_row)
        scores = self._scores[:n]
        mask = (self._seqs[:n] <= seq) & (scores > start)
        if floor is not None:
            mask &= scores >= floor[1]
            for col in np.flatnonzero(mask & (scores == floor[1])).tolist():
                if self._by_row[col][4] < floor[0]:
                    mask[col] = False
        return mask

    def members(self, ids: list[bytes]) -> np.ndarray:
        """The columns of ``ids`` (those this window holds) as a mask."""
        self._sync()
        mask = np.zeros(len(self._by_row), dtype=bool)
        rows = [self._rows[cid] for cid in ids if cid in self._rows]
        mask[rows] = True
        return mask

    def alike(self, toks: frozenset[str], own_id: bytes, among: np.ndarray) -> list[tuple[bytes, str]]:
        """The entries of the columns ``among`` (a mask, from ``held`` or ``members``; but
        ``own_id``), newest first, of the same fault as ``toks``, with their customers. Every
        entry the window holds is compared (a column more costs far less than picking columns
        out); those of the same fault are then kept if among those asked."""
        mine = self.entries.get(own_id)
        bits = mine[2] if mine is not None and mine[1] == toks else self.bits(toks)
        self._sync()
        words = self._words(bits)
        used = np.flatnonzero(words)  # the words of the matrix the new complaint's tokens are in
        n_columns = len(self._by_row)
        if not n_columns or not len(used):
            return []
        shared = np.bitwise_count(self._matrix[used, :n_columns] & words[used, None]).sum(axis=0)
        near = np.flatnonzero(shared >= MIN_TOKENS)
        if not len(near):
            return []
        # _alike, for those sharing enough tokens (then no size is 0)
        shared, sizes, n = shared[near], self._sizes[near], len(toks)
        same = near[(shared / np.minimum(sizes, n) >= 0.75) | (shared / (sizes + n - shared) >= 0.4)]
        if len(among) < n_columns:  # (columns added since ``among`` was made: not among them)
            among = np.concatenate((among, np.zeros(n_columns - len(among), dtype=bool)))
        same = same[among[same]]
        if not len(same):
            return []
        by_row = self._by_row
        found = [entry for entry in map(by_row.__getitem__, same.tolist()) if entry[4] != own_id]
        if len(found) > 1:  # newest first, as the window orders them
            found.sort(key=lambda entry: (entry[5], entry[4]), reverse=True)
        return [(entry[4], entry[0]) for entry in found]

    def _words(self, bits: int) -> np.ndarray:
        return np.frombuffer(bits.to_bytes(len(self._matrix) * 8, "little"), dtype=_WORD)

    def _sync(self) -> None:
        """Write the bits of the entries added since the last comparison into their columns of
        the matrix (one row of 64-bit words per 64 tokens of the vocabulary, one column per entry):
        more words for a vocabulary that outgrew them, twice the columns when they are all used."""
        words = max(1, (len(self.vocabulary) + 63) // 64)
        if words > len(self._matrix):  # (the entries written have no bit of the new tokens); 4 words at least
            more = max(4, words - len(self._matrix))
            self._matrix = np.concatenate((self._matrix, np.zeros((more, self._matrix.shape[1]), dtype=_WORD)))
        if not self._unwritten:
            return
        for cid in self._unwritten:
            entry = self.entries[cid]
            row = self._rows.get(cid)
            if row is None:
                row = self._rows[cid] = len(self._by_row)
                self._by_row.append(entry)
                if row == self._matrix.shape[1]:
                    more = max(64, row)
                    self._matrix = np.concatenate((self._matrix, np.zeros((len(self._matrix), more), dtype=_WORD)),
                                                  axis=1)
                    self._sizes, self._scores, self._seqs = (
                        np.concatenate((column, np.zeros(more, dtype=np.int64)))
                        for column in (self._sizes, self._scores, self._seqs))
            else:
                self._by_row[row] = entry  # (added again: a retried job's note)
            self._matrix[:, row] = self._words(entry[2])
            self._sizes[row], self._scores[row], self._seqs[row] = entry[3], entry[5], entry[6]
        self._unwritten = []

    def pruned(self, start: int, floor: tuple[bytes, int] | None) -> "Window":
        """A new window of the entries that may still be in a window: younger than ``start`` and
        not older than ``floor`` (a window's start and oldest entry only move on), or not landed
        yet (and younger than ``start``); with a vocabulary of their tokens alone. New, not this one changed: a job
        deciding on this one meanwhile keeps comparing with what it had."""
        kept = [(cid, entry) for cid, entry in self.entries.items()
                if entry[5] > start and (entry[6] == PENDING or floor is None or (entry[5], cid) >= (floor[1], floor[0]))]
        counts: dict[str, int] = {}
        for _, (_, toks, *_) in kept:
            for token in toks:
                counts[token] = counts.get(token, 0) + 1
        window = Window()
        window.vocabulary = {token: bit for bit, token in enumerate(sorted(counts, key=counts.__getitem__,
                                                                            reverse=True))}
        for cid, (customer, toks, _, _, _, score, seq) in kept:
            window.add(cid, customer, toks, score, seq)
        return window


def parse_entry(raw: bytes | str) -> tuple[str, frozenset[str]]:
    """A window's text: customer and tokens."""
    customer, _, text = (raw.decode() if isinstance(raw, bytes) else raw).partition("\t")
    return customer, frozenset(text.split(" "))


__all__ = ["MIN_TOKENS", "PENDING", "Entry", "Window", "parse_entry"]
