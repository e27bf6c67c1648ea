"""A pack of K LSTM text VAEs (Bowman et al. 2016; He et al. 2019), every weight with a leading K axis.

Encoder: word embeddings -> LSTM layers -> the last hidden state of each sentence -> μ, log σ².
Decoder: p(x|z) = Π_t Cat(w_t | w_<t, z) with teacher forcing, an LSTM over `<s> w₁ … w_n`
predicting `w₁ … w_n </s>`; z enters as He et al. 2019 do it (`z_to`): concatenated to every input
embedding, and as the initial state (c₀ = W z, h₀ = tanh c₀). Padding (id 0) only ever follows a
sentence's `</s>`, so a causal decoder and the encoder's state at the last real token never see it.

How K LSTMs run (see `models.packing`): a pack of one calls torch's own LSTM (cuDNN on a GPU, one
fused kernel per layer), which is what every member of a CPU pack is. cuDNN takes one weight set
per call and `vmap` has no batching rule for it, so a batched pack (K > 1, CUDA) runs its own
recurrence: the input projections of all steps as one `baddbmm` over the stacked weights, then one
`baddbmm` and the gate update per step.

Training-time randomness (dropout, word dropout) is not drawn here: the step hands `decode` uniform
numbers from each member's own stream, `noise_width` per token, so a run's masks never depend on
its pack.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..data.dataset import BOS, PAD, UNK
from .likelihoods import Likelihood
from .mlp import PackedLinear

#: He et al. 2019 initialise every weight from U(±0.01) and the embeddings from U(±0.1).
INIT_SCALE, EMBEDDING_INIT_SCALE = 0.01, 0.1


class PackedEmbedding(nn.Module):
    """K embedding tables: token ids (K, B, T) -> (K, B, T, E)."""

    def __init__(self, members: int, vocab: int, width: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(members, vocab, width))

    def reset(self, generators: Sequence[torch.Generator], scale: float) -> None:
        with torch.no_grad():
            for k, gen in enumerate(generators):
                self.weight[k].uniform_(-scale, scale, generator=gen)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        k, vocab, width = self.weight.shape
        if k == 1:
            return F.embedding(ids, self.weight[0])
        offsets = (torch.arange(k, device=ids.device) * vocab).view(k, 1, 1)
        return F.embedding(ids + offsets, self.weight.reshape(k * vocab, width))


class PackedLSTM(nn.Module):
    """K independent LSTM layers (nn.LSTM's gate order i, f, g, o and weight layout):
    (K, B, T, in) and an initial state ((K, B, H), (K, B, H)) or None -> (K, B, T, H)."""

    def __init__(self, members: int, fan_in: int, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.weight_ih = nn.Parameter(torch.empty(members, 4 * hidden, fan_in))
        self.weight_hh = nn.Parameter(torch.empty(members, 4 * hidden, hidden))
        self.bias_ih = nn.Parameter(torch.empty(members, 4 * hidden))
        self.bias_hh = nn.Parameter(torch.empty(members, 4 * hidden))

    def reset(self, generators: Sequence[torch.Generator], scale: float) -> None:
        with torch.no_grad():
            for k, gen in enumerate(generators):
                for p in (self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh):
                    p[k].uniform_(-scale, scale, generator=gen)

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        k, b = x.shape[:2]
        if state is None:
            zeros = x.new_zeros(k, b, self.hidden)
            state = (zeros, zeros)
        if k == 1:
            return self._native(x, state)
        return self.recurrence(x, state)

    def _native(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """torch's LSTM on the one member's weights (what nn.LSTM.forward calls)."""
        weights = [self.weight_ih[0], self.weight_hh[0], self.bias_ih[0], self.bias_hh[0]]
        h0, c0 = state
        out, _, _ = torch._VF.lstm(  # type: ignore[attr-defined]
            x[0], (h0, c0), weights, True, 1, 0.0, self.training, False, True
        )
        return out.unsqueeze(0)

    def recurrence(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """The batched recurrence over all K members at once (Hochreiter & Schmidhuber 1997)."""
        k, b, steps, fan_in = x.shape
        bias = (self.bias_ih + self.bias_hh).unsqueeze(1)  # (K, 1, 4H)
        # Every step's input projection in one batched matmul: (K, B·T, in) @ (K, in, 4H).
        projected = torch.baddbmm(
            bias, x.reshape(k, b * steps, fan_in), self.weight_ih.transpose(1, 2)
        ).view(k, b, steps, -1)
        recurrent = self.weight_hh.transpose(1, 2)  # (K, H, 4H)
        h, c = state
        outputs = []
        for t in range(steps):
            gates = torch.baddbmm(projected[:, :, t], h, recurrent)
            i, f, g, o = gates.chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outputs.append(h)
        return torch.stack(outputs, dim=2)


def _linear(layer: PackedLinear, x: torch.Tensor) -> torch.Tensor:
    """A packed linear map on (K, B, T, in) -> (K, B, T, out)."""
    k, b, t, _ = x.shape
    return layer(x.reshape(k, b * t, -1)).view(k, b, t, -1)


class PackedLSTMVAE(nn.Module):
    """LSTM encoder q(z|x) = N(μ, diag σ²), N(0, I) prior, autoregressive LSTM decoder with a
    categorical likelihood over the vocabulary."""

    def __init__(
        self,
        members: int,
        vocab_size: int,
        max_tokens: int,
        embedding_dim: int,
        hidden: Sequence[int],
        latent_dim: int,
        dropout: float,
        word_dropout: float,
        z_to: Sequence[str],
        lik: Likelihood,
    ) -> None:
        super().__init__()
        self.members, self.latent_dim, self.vocab_size = members, latent_dim, vocab_size
        self.input_dim = max_tokens  # T: the longest sentence's tokens
        self.likelihood, self.dropout, self.word_dropout = lik, dropout, word_dropout
        self.z_input, self.z_state = "input" in z_to, "state" in z_to
        self.embedding_dim, self.widths = embedding_dim, tuple(hidden)
        k = members
        self.enc_embedding = PackedEmbedding(k, vocab_size, embedding_dim)
        enc_in = [embedding_dim, *hidden[:-1]]
        self.encoder = nn.ModuleList(
            PackedLSTM(k, a, h) for a, h in zip(enc_in, hidden, strict=True)
        )
        # He et al. 2019: no bias on the maps to μ, log σ² and to the decoder's initial cell.
        self.to_stats = PackedLinear(k, hidden[-1], 2 * latent_dim, bias=False)
        self.dec_embedding = PackedEmbedding(k, vocab_size, embedding_dim)
        dec_in = [embedding_dim + (latent_dim if self.z_input else 0), *hidden[:-1]]
        self.decoder = nn.ModuleList(
            PackedLSTM(k, a, h) for a, h in zip(dec_in, hidden, strict=True)
        )
        self.to_state = (
            PackedLinear(k, latent_dim, sum(hidden), bias=False) if self.z_state else None
        )
        self.to_logits = PackedLinear(k, hidden[-1], vocab_size)

    @property
    def noise_width(self) -> int:
        """Uniform numbers per token a training step hands `decode`: dropout masks of the input
        embedding and of the top LSTM's output, and the word-dropout coin."""
        masks = self.embedding_dim + self.widths[-1] if self.dropout else 0
        return masks + (1 if self.word_dropout else 0)

    @property
    def floats_per_example(self) -> int:
        """float32 values one decoded sentence holds at once: logits and log-softmax, the LSTM
        gates and states, embeddings."""
        return self.input_dim * (
            3 * self.vocab_size + 6 * sum(self.widths) + 2 * self.embedding_dim
        )

    def reset(self, generators: Sequence[torch.Generator]) -> None:
        for module in self.modules():
            if isinstance(module, PackedEmbedding):
                module.reset(generators, EMBEDDING_INIT_SCALE)
            elif isinstance(module, PackedLSTM | PackedLinear):
                module.reset(generators, INIT_SCALE)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids (K, B, T) -> μ, log σ², each (K, B, D), from each sentence's last state."""
        h = self.enc_embedding(x)
        for layer in self.encoder:
            h = layer(h)
        last = (x != PAD).sum(-1).sub(1).clamp(min=0)  # (K, B): the index of each `</s>`
        h = h.gather(2, last[..., None, None].expand(*last.shape, 1, h.shape[-1])).squeeze(2)
        mu, logvar = self.to_stats(h).chunk(2, dim=-1)
        return mu, logvar

    def decode(
        self, z: torch.Tensor, x: torch.Tensor | None = None, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits (K, B, T, V) of every next token of x (K, B, T) given z (K, B, D) (teacher
        forcing); `noise` (K, B, T, noise_width) uniform numbers while training, else None."""
        assert x is not None, "a text decoder reads the sentence it scores"
        inputs = torch.cat([torch.full_like(x[..., :1], BOS), x[..., :-1]], dim=-1)
        p = self.dropout
        if noise is not None and self.word_dropout:
            # Bowman et al. 2016: words (never `<s>`) replaced by <unk> with probability p.
            coin = noise[..., -1] < self.word_dropout
            coin[..., 0] = False
            inputs = torch.where(coin & (inputs != PAD), UNK, inputs)
        h = self.dec_embedding(inputs)
        if noise is not None and p:
            h = h * (noise[..., : self.embedding_dim] >= p) / (1 - p)
        if self.z_input:
            h = torch.cat([h, z.unsqueeze(2).expand(*z.shape[:2], h.shape[2], -1)], dim=-1)
        states: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(self.decoder)
        if self.to_state is not None:
            cells = self.to_state(z).split(list(self.widths), dim=-1)
            states = [(torch.tanh(c), c) for c in cells]
        for layer, state in zip(self.decoder, states, strict=True):
            h = layer(h, state)
        if noise is not None and p:
            start = self.embedding_dim
            h = h * (noise[..., start : start + self.widths[-1]] >= p) / (1 - p)
        return _linear(self.to_logits, h)

    def nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """-log p(x|z) per sentence, padding excluded: (..., T, V), (..., T) -> (...)."""
        return self.likelihood.nll(params, x)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return self.likelihood.mean(params)
