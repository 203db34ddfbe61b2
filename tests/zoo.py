"""A zoo of real architectures, written the way their authors write them (not rearranged for us).

Each model copies the idioms of its canonical source: functional calls and tensor methods in
``forward`` (``F.relu``, ``x.view``, ``out += identity``, ``.split``, ``.transpose``, ``F.sdpa``),
in-place layers, tied weights, buffers, masks and dropout in training mode. ``convert`` swaps the
layers; everything else in those forwards is what the router has to catch.

``ZOO`` maps a name to a factory ``make(dtype) -> Example``; the caller seeds the RNG first.
Sizes are tiny: a forward and backward of any of them takes milliseconds on a CPU.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import manual_backprop.functional as MF
from manual_backprop.functional.linear import flatten as manual_flatten


class Example(NamedTuple):
    """A model, what to call it with, and a loss of its output built from hand-written Functions only
    (so that ``audit_backward`` of the loss judges the model, not the loss)."""

    model: nn.Module
    inputs: tuple
    kwargs: dict
    loss_fn: Callable[[object], torch.Tensor]


# -- MLP: the classic multilayer perceptron on flattened images ------------------------------------
class MLP(nn.Module):
    def __init__(self, in_features: int = 64, hidden: int = 32, num_classes: int = 10):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, num_classes)

    def forward(self, x):
        x = x.view(x.size(0), -1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


def make_mlp(dtype: torch.dtype) -> Example:
    model = MLP().to(dtype)
    images, labels = torch.randn(4, 1, 8, 8, dtype=dtype), torch.randint(0, 10, (4,))
    return Example(model, (images,), {}, lambda logits: MF.cross_entropy(logits, labels))


# -- LeNet: the 60-minute blitz's Net ---------------------------------------------------------------
class LeNet(nn.Module):
    def __init__(self):
        super().__init__()
        # 1 input image channel, 6 output channels, 5x5 square convolution kernel
        self.conv1 = nn.Conv2d(1, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        # an affine operation: y = Wx + b
        self.fc1 = nn.Linear(16 * 5 * 5, 120)  # 5*5 from image dimension
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        # Max pooling over a (2, 2) window
        x = F.max_pool2d(F.relu(self.conv1(x)), (2, 2))
        # If the size is a square, you can specify with a single number
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)  # flatten all dimensions except the batch dimension
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        x = self.fc3(x)
        return x


def make_lenet(dtype: torch.dtype) -> Example:
    model = LeNet().to(dtype)
    images, labels = torch.randn(2, 1, 32, 32, dtype=dtype), torch.randint(0, 10, (2,))
    return Example(model, (images,), {}, lambda logits: MF.cross_entropy(logits, labels))


# -- ResNet: torchvision's BasicBlock and ResNet, narrow and shallow -------------------------------
def conv3x3(in_planes: int, out_planes: int, stride: int = 1, groups: int = 1, dilation: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding"""
    return nn.Conv2d(
        in_planes,
        out_planes,
        kernel_size=3,
        stride=stride,
        padding=dilation,
        groups=groups,
        bias=False,
        dilation=dilation,
    )


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution"""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion: int = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 norm_layer: Callable[..., nn.Module] | None = None) -> None:
        super().__init__()
        if norm_layer is None:
            norm_layer = nn.BatchNorm2d
        # Both self.conv1 and self.downsample layers downsample the input when stride != 1
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        identity = x

        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)

        out = self.conv2(out)
        out = self.bn2(out)

        if self.downsample is not None:
            identity = self.downsample(x)

        out += identity
        out = self.relu(out)

        return out


class ResNet(nn.Module):
    def __init__(self, block: type[BasicBlock] = BasicBlock, layers: tuple[int, ...] = (2, 1),
                 widths: tuple[int, ...] = (8, 16), num_classes: int = 5) -> None:
        super().__init__()
        norm_layer = nn.BatchNorm2d
        self._norm_layer = norm_layer
        self.inplanes = widths[0]
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, widths[0], layers[0])
        self.layer2 = self._make_layer(block, widths[1], layers[1], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(widths[1] * block.expansion, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, block: type[BasicBlock], planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        norm_layer = self._norm_layer
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride),
                norm_layer(planes * block.expansion),
            )

        layers = [block(self.inplanes, planes, stride, downsample, norm_layer)]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(self.inplanes, planes, norm_layer=norm_layer))

        return nn.Sequential(*layers)

    def _forward_impl(self, x):
        # See note [TorchScript super()]
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.relu(x)
        x = self.maxpool(x)

        x = self.layer1(x)
        x = self.layer2(x)

        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        x = self.fc(x)

        return x

    def forward(self, x):
        return self._forward_impl(x)


def make_resnet(dtype: torch.dtype) -> Example:
    model = ResNet().to(dtype)
    images, labels = torch.randn(3, 3, 16, 16, dtype=dtype), torch.randint(0, 5, (3,))
    return Example(model, (images,), {}, lambda logits: MF.cross_entropy(logits, labels))


# -- LSTMTagger: the "Sequence Models and Long Short-Term Memory Networks" tutorial ----------------
class LSTMTagger(nn.Module):
    def __init__(self, embedding_dim: int, hidden_dim: int, vocab_size: int, tagset_size: int):
        super().__init__()
        self.hidden_dim = hidden_dim

        self.word_embeddings = nn.Embedding(vocab_size, embedding_dim)

        # The LSTM takes word embeddings as inputs, and outputs hidden states
        # with dimensionality hidden_dim.
        self.lstm = nn.LSTM(embedding_dim, hidden_dim)

        # The linear layer that maps from hidden state space to tag space
        self.hidden2tag = nn.Linear(hidden_dim, tagset_size)

    def forward(self, sentence):
        embeds = self.word_embeddings(sentence)
        lstm_out, _ = self.lstm(embeds.view(len(sentence), 1, -1))
        tag_space = self.hidden2tag(lstm_out.view(len(sentence), -1))
        tag_scores = F.log_softmax(tag_space, dim=1)
        return tag_scores


# the tutorial's toy data: two tagged sentences, tags DET NN V
TRAINING_DATA = [
    ("The dog ate the apple".split(), ["DET", "NN", "V", "DET", "NN"]),
    ("Everybody read that book".split(), ["NN", "V", "DET", "NN"]),
]
TAG_TO_IX = {"DET": 0, "NN": 1, "V": 2}
WORD_TO_IX: dict[str, int] = {}
for _sent, _tags in TRAINING_DATA:
    for _word in _sent:
        WORD_TO_IX.setdefault(_word, len(WORD_TO_IX))


def prepare_sequence(seq: list[str], to_ix: dict[str, int]) -> torch.Tensor:
    idxs = [to_ix[w] for w in seq]
    return torch.tensor(idxs, dtype=torch.long)


def make_lstm_tagger(dtype: torch.dtype) -> Example:
    model = LSTMTagger(6, 6, len(WORD_TO_IX), len(TAG_TO_IX)).to(dtype)
    sentence, tags = TRAINING_DATA[0]
    targets = prepare_sequence(tags, TAG_TO_IX)
    return Example(model, (prepare_sequence(sentence, WORD_TO_IX),), {},
                   lambda tag_scores: MF.nll_loss(tag_scores, targets))


class BatchedLSTMTagger(nn.Module):
    """The tagger over a padded batch: a bidirectional batch_first LSTM on a PackedSequence."""

    def __init__(self, embedding_dim: int, hidden_dim: int, vocab_size: int, tagset_size: int, pad_idx: int = 0):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, embedding_dim, padding_idx=pad_idx)
        self.lstm = nn.LSTM(embedding_dim, hidden_dim, batch_first=True, bidirectional=True)
        self.hidden2tag = nn.Linear(2 * hidden_dim, tagset_size)

    def forward(self, sentences, lengths):
        embeds = self.word_embeddings(sentences)
        packed = pack_padded_sequence(embeds, lengths, batch_first=True, enforce_sorted=False)
        packed_out, _ = self.lstm(packed)
        lstm_out, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=sentences.size(1))
        tag_space = self.hidden2tag(lstm_out)
        return F.log_softmax(tag_space, dim=-1)


def make_batched_lstm_tagger(dtype: torch.dtype) -> Example:
    pad = 0
    word_to_ix = {word: ix + 1 for word, ix in WORD_TO_IX.items()}  # 0 is the padding token
    model = BatchedLSTMTagger(6, 5, len(word_to_ix) + 1, len(TAG_TO_IX), pad_idx=pad).to(dtype)
    length = max(len(sentence) for sentence, _ in TRAINING_DATA)
    sentences = torch.full((len(TRAINING_DATA), length), pad, dtype=torch.long)
    targets = torch.full((len(TRAINING_DATA), length), -100, dtype=torch.long)  # ignored by the loss
    for i, (sentence, tags) in enumerate(TRAINING_DATA):
        sentences[i, : len(sentence)] = prepare_sequence(sentence, word_to_ix)
        targets[i, : len(tags)] = prepare_sequence(tags, TAG_TO_IX)
    lengths = torch.tensor([len(sentence) for sentence, _ in TRAINING_DATA])
    return Example(model, (sentences, lengths), {},
                   lambda scores: MF.nll_loss(manual_flatten(scores, 0, 1), targets.view(-1)))


# -- TransformerEncoderModel: the "Language Modeling with nn.Transformer" tutorial, batch_first ----
class PositionalEncoding(nn.Module):
    def __init__(self, d_model: int, dropout: float = 0.1, max_len: int = 5000):
        super().__init__()
        self.dropout = nn.Dropout(p=dropout)

        position = torch.arange(max_len).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(1, max_len, d_model)
        pe[0, :, 0::2] = torch.sin(position * div_term)
        pe[0, :, 1::2] = torch.cos(position * div_term)
        self.register_buffer("pe", pe)

    def forward(self, x):
        """x: Tensor, shape [batch_size, seq_len, embedding_dim]"""
        x = x + self.pe[:, : x.size(1)]
        return self.dropout(x)


class TransformerEncoderModel(nn.Module):
    def __init__(self, ntoken: int, d_model: int, nhead: int, d_hid: int, nlayers: int, dropout: float = 0.1):
        super().__init__()
        self.model_type = "Transformer"
        self.pos_encoder = PositionalEncoding(d_model, dropout)
        encoder_layers = nn.TransformerEncoderLayer(d_model, nhead, d_hid, dropout=dropout, batch_first=True)
        self.transformer_encoder = nn.TransformerEncoder(encoder_layers, nlayers)
        self.embedding = nn.Embedding(ntoken, d_model)
        self.d_model = d_model
        self.linear = nn.Linear(d_model, ntoken)

        self.init_weights()

    def init_weights(self) -> None:
        initrange = 0.1
        self.embedding.weight.data.uniform_(-initrange, initrange)
        self.linear.bias.data.zero_()
        self.linear.weight.data.uniform_(-initrange, initrange)

    def forward(self, src, src_mask=None, src_key_padding_mask=None):
        """src: [batch_size, seq_len]; src_mask: [seq_len, seq_len]; src_key_padding_mask: [batch_size, seq_len]"""
        src = self.embedding(src) * math.sqrt(self.d_model)
        src = self.pos_encoder(src)
        if src_mask is None:
            # Generates a square causal mask for the sequence. The masked positions are filled with float('-inf').
            src_mask = nn.Transformer.generate_square_subsequent_mask(src.size(1)).to(src.device)
        output = self.transformer_encoder(src, src_mask, src_key_padding_mask=src_key_padding_mask)
        output = self.linear(output)
        return output


def make_transformer(dtype: torch.dtype) -> Example:
    ntoken, batch, seq = 11, 2, 5
    model = TransformerEncoderModel(ntoken, d_model=8, nhead=2, d_hid=16, nlayers=2, dropout=0.1).to(dtype)
    model.train()
    src = torch.randint(1, ntoken, (batch, seq))
    padding = torch.zeros(batch, seq, dtype=torch.bool)
    padding[1, 3:] = True  # the second sequence is two tokens shorter
    src[padding] = 0
    targets = torch.randint(0, ntoken, (batch, seq)).masked_fill(padding, -100)
    causal = torch.triu(torch.ones(seq, seq, dtype=torch.bool), diagonal=1)  # True: may not attend
    return Example(model, (src,), {"src_mask": causal, "src_key_padding_mask": padding},
                   lambda output: MF.cross_entropy(manual_flatten(output, 0, 1), targets.view(-1)))


# -- GPT: nanoGPT (Karpathy), decoder only ----------------------------------------------------------
class LayerNorm(nn.Module):
    """LayerNorm but with an optional bias. PyTorch doesn't support simply bias=False"""

    def __init__(self, ndim, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, input):
        return F.layer_norm(input, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        # key, query, value projections for all heads, but in a batch
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        # output projection
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        # regularization
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout

    def forward(self, x):
        B, T, C = x.size()  # batch size, sequence length, embedding dimensionality (n_embd)

        # calculate query, key, values for all heads in batch and move head forward to be the batch dim
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)

        # causal self-attention; Self-attend: (B, nh, T, hs) x (B, nh, hs, T) -> (B, nh, T, T)
        # efficient attention using Flash Attention CUDA kernels
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=None, dropout_p=self.dropout if self.training else 0, is_causal=True
        )
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble all head outputs side by side

        # output projection
        y = self.resid_dropout(self.c_proj(y))
        return y


class GPTMLP(nn.Module):
    """nanoGPT's ``MLP`` (renamed here only because the zoo has an MLP of its own)."""

    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        x = self.c_fc(x)
        x = self.gelu(x)
        x = self.c_proj(x)
        x = self.dropout(x)
        return x


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = GPTMLP(config)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


@dataclass
class GPTConfig:
    block_size: int = 8
    vocab_size: int = 13
    n_layer: int = 2
    n_head: int = 2
    n_embd: int = 8
    dropout: float = 0.1
    bias: bool = True  # True: bias in Linears and LayerNorms, like GPT-2. False: a bit better and faster


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        assert config.vocab_size is not None
        assert config.block_size is not None
        self.config = config

        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=LayerNorm(config.n_embd, bias=config.bias),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # with weight tying when using torch.compile() some warnings get generated:
        # "UserWarning: functional_call was passed multiple values for tied weights.
        # This behavior is deprecated and will be an error in future versions"
        # not 100% sure what this is, so far seems to be harmless. TODO investigate
        self.transformer.wte.weight = self.lm_head.weight  # https://paperswithcode.com/method/weight-tying

        # init all weights
        self.apply(self._init_weights)
        # apply special scaled init to the residual projections, per GPT-2 paper
        for pn, p in self.named_parameters():
            if pn.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx, targets=None):
        device = idx.device
        b, t = idx.size()  # noqa: RUF059 (nanoGPT's line, kept as written)
        assert t <= self.config.block_size, (
            f"Cannot forward sequence of length {t}, block size is only {self.config.block_size}"
        )
        pos = torch.arange(0, t, dtype=torch.long, device=device)  # shape (t)

        # forward the GPT model itself
        tok_emb = self.transformer.wte(idx)  # token embeddings of shape (b, t, n_embd)
        pos_emb = self.transformer.wpe(pos)  # position embeddings of shape (t, n_embd)
        x = self.transformer.drop(tok_emb + pos_emb)
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)

        if targets is not None:
            # if we are given some desired targets also calculate the loss
            logits = self.lm_head(x)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        else:
            # inference-time mini-optimization: only forward the lm_head on the very last position
            logits = self.lm_head(x[:, [-1], :])  # note: using list [-1] to preserve the time dim
            loss = None

        return logits, loss


def make_gpt(dtype: torch.dtype) -> Example:
    config = GPTConfig()
    model = GPT(config).to(dtype)
    idx = torch.randint(0, config.vocab_size, (2, config.block_size))
    targets = torch.roll(idx, -1, dims=1)
    targets[:, -1] = -1  # nothing to predict after the last token
    return Example(model, (idx,), {"targets": targets}, lambda output: output[1])


# -- FunctionalNet: only torch.nn.functional calls and raw Parameters, no submodules ---------------
class FunctionalNet(nn.Module):
    def __init__(self, in_channels: int = 1, channels: int = 4, side: int = 8, hidden: int = 12, num_classes: int = 5):
        super().__init__()
        self.hidden = hidden
        self.w1 = nn.Parameter(torch.randn(channels, in_channels, 3, 3) * math.sqrt(2 / (9 * in_channels)))
        self.b1 = nn.Parameter(torch.zeros(channels))
        flat = channels * (side // 2) ** 2
        self.w2 = nn.Parameter(torch.randn(hidden, flat) / math.sqrt(flat))
        self.b2 = nn.Parameter(torch.zeros(hidden))
        self.g = nn.Parameter(torch.ones(hidden))
        self.b = nn.Parameter(torch.zeros(hidden))
        self.w3 = nn.Parameter(torch.randn(num_classes, hidden) / math.sqrt(hidden))
        self.b3 = nn.Parameter(torch.zeros(num_classes))

    def forward(self, x, target):
        x = F.conv2d(x, self.w1, self.b1, padding=1)
        x = F.relu(x)
        x = F.avg_pool2d(x, 2)
        x = x.flatten(1)
        h = torch.tanh(x @ self.w2.t() + self.b2)
        h = F.layer_norm(h, (self.hidden,), self.g, self.b)
        h = F.dropout(h, 0.1, self.training)
        h = h + h * h.mean(dim=1, keepdim=True)  # a residual, scaled by each sample's mean activation
        logits = F.linear(h, self.w3, self.b3)
        loss = F.cross_entropy(logits, target) + 0.1 * F.mse_loss(logits.softmax(dim=1), F.one_hot(target, 5).to(h))
        return loss


def make_functional_net(dtype: torch.dtype) -> Example:
    model = FunctionalNet().to(dtype)
    images, labels = torch.randn(3, 1, 8, 8, dtype=dtype), torch.randint(0, 5, (3,))
    return Example(model, (images, labels), {}, lambda loss: loss)


ZOO: dict[str, Callable[[torch.dtype], Example]] = {
    "MLP": make_mlp,
    "LeNet": make_lenet,
    "ResNet": make_resnet,
    "LSTMTagger": make_lstm_tagger,
    "BatchedLSTMTagger": make_batched_lstm_tagger,
    "TransformerEncoderModel": make_transformer,
    "GPT": make_gpt,
    "FunctionalNet": make_functional_net,
}
