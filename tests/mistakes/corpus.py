"""A corpus of common mistakes, at least three per task: each is a text edit of the task's solution.

``edits`` are (old, new) replacements applied, in order, to the solution blocks of the task (every
occurrence; each must occur). ``cause`` is what the self-check should name (stored with the
mistake's outputs in course_lib/checks/mistakes.pt by tests/mistakes/build.py); ``named`` is the
text that counts as naming it when a property, not a stored output, is what catches it.
Instructor-side only: never copied into the student edition.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mistake:
    name: str
    task: str
    cause: str
    edits: tuple[tuple[str, str], ...]
    named: str = ""  # default: cause

    @property
    def expect(self) -> str:
        return self.named or self.cause


def m(name: str, task: str, cause: str, *edits: tuple[str, str], named: str = "") -> Mistake:
    return Mistake(name, task, cause, tuple(edits), named)


SDPA_RETURN = "return weights @ v, weights"
MHA_PROJ = "out = self.proj(out.transpose(1, 2).reshape(B, N, D))"
MISTAKES: tuple[Mistake, ...] = (
    # 1.1 scaled_dot_product_attention
    m("1.1 no scale", "1.1", "attention without the 1/sqrt(d) scale", ("/ math.sqrt(q.shape[-1])", "")),
    m("1.1 scale by d", "1.1", "scores divided by d instead of sqrt(d)", ("/ math.sqrt(q.shape[-1])", "/ q.shape[-1]")),
    m("1.1 scale by d_v", "1.1", "scaled by the width of v instead of the width d of q and k", ("math.sqrt(q.shape[-1])", "math.sqrt(v.shape[-1])")),
    m("1.1 softmax over queries", "1.1", "softmax over the queries (dim=-2) instead of the keys (dim=-1)",
      ("weights = torch.softmax(scores, dim=-1)", "weights = torch.softmax(scores, dim=-2)")),
    m("1.1 swapped return", "1.1", "(weights, out) returned instead of (out, weights)", (SDPA_RETURN, "return weights, weights @ v")),
    m("1.1 mask inverted", "1.1", "bool mask inverted: True must mean 'may attend'", ("masked_fill(~mask,", "masked_fill(mask,")),
    m("1.1 additive mask ignored", "1.1", "an additive (float) mask is ignored", ("scores = scores + mask", "scores = scores")),
    m("1.1 NaN rows", "1.1", "fully masked rows left as NaN", ("weights = torch.nan_to_num(weights, nan=0.0)", "weights = weights"),
      named="not NaN"),
    m("1.1 calls F.sdpa", "1.1", "calls PyTorch's fused attention",
      (SDPA_RETURN, "return F.scaled_dot_product_attention(q, k, v, attn_mask=mask).nan_to_num(0.0), weights"), named="written by hand"),
    m("1.1 sdpa under another name", "1.1", "calls PyTorch's fused attention",
      (SDPA_RETURN, "fast = torch.ops.aten.scaled_dot_product_attention\n    return fast(q, k, v, attn_mask=mask).nan_to_num(0.0), weights"),
      named="written by hand"),
    # 1.2 causal_mask
    m("1.2 triu", "1.2", "a causal mask that lets the future in (triu instead of tril)", (".tril()", ".triu()")),
    m("1.2 strict tril", "1.2", "a causal mask that hides each token from itself (tril(-1))", (".tril()", ".tril(-1)"), named="attend to itself"),
    m("1.2 float mask", "1.2", "a 0/1 float mask instead of a bool one", ("dtype=torch.bool", "dtype=torch.float32"), named="expected a bool"),
    m("1.2 device ignored", "1.2", "the device argument is ignored", (", device=device)", ")"), named="on the device given"),
    # 1.3 SingleHeadAttention
    m("1.3 no scale", "1.3", "attention without the 1/sqrt(d) scale",
      ("return scaled_dot_product_attention(q, k, v, mask)", "w = torch.softmax(q @ k.transpose(-2, -1), dim=-1)\n        return w @ v, w")),
    m("1.3 q and k swapped", "1.3", "q and k taken in the wrong order from qkv", ("q, k, v = self.qkv(z)", "k, q, v = self.qkv(z)")),
    m("1.3 v first", "1.3", "v taken from the first third of qkv", ("q, k, v = self.qkv(z)", "v, q, k = self.qkv(z)")),
    m("1.3 mask dropped", "1.3", "the mask is not passed on", ("(q, k, v, mask)", "(q, k, v)")),
    m("1.3 swapped return", "1.3", "(weights, out) returned instead of (out, weights)",
      ("return scaled_dot_product_attention(q, k, v, mask)", "out, w = scaled_dot_product_attention(q, k, v, mask)\n        return w, out")),
    # 1.4 MultiHeadAttention
    m("1.4 no transpose", "1.4", "heads merged without the transpose: (B, h, N, d) reshaped straight to (B, N, D)",
      (MHA_PROJ, "out = self.proj(out.reshape(B, N, D))")),
    m("1.4 no proj", "1.4", "the output projection self.proj is missing", (MHA_PROJ, "out = out.transpose(1, 2).reshape(B, N, D)")),
    m("1.4 mask dropped", "1.4", "the mask is not passed on", ("attend(q, k, v, mask,", "attend(q, k, v, None,")),
    m("1.4 heads interleaved", "1.4", "qkv split as (h, 3, d) instead of (3, h, d)",
      ("reshape(B, N, 3, self.heads, self.head_dim)", "reshape(B, N, self.heads, 3, self.head_dim).transpose(2, 3)")),
    m("1.4 weights averaged", "1.4", "weights averaged over the heads", ("return (out, weights) if", "return (out, weights.mean(1)) if"),
      named="expected weights (B=2, h=2"),
    # 1.5 CrossAttention
    m("1.5 k and v swapped", "1.5", "keys and values swapped", ("k, v = kv.permute", "v, k = kv.permute")),
    m("1.5 no proj", "1.5", "the output projection self.proj is missing", (MHA_PROJ, "out = out.transpose(1, 2).reshape(B, N, D)")),
    m("1.5 mask dropped", "1.5", "the mask is not passed on", ("attend(q, k, v, mask,", "attend(q, k, v, None,")),
    m("1.5 q heads without transpose", "1.5", "query heads split by a reshape alone (no transpose)",
      ("q = self.q(x).reshape(B, N, self.heads, self.head_dim).transpose(1, 2)", "q = self.q(x).reshape(B, self.heads, N, self.head_dim)")),
    # 1.6 GatedCrossAttention
    m("1.6 no tanh", "1.6", "the gate is alpha, not tanh(alpha)", ("torch.tanh(self.alpha) *", "self.alpha *")),
    m("1.6 sigmoid gate", "1.6", "sigmoid(alpha) as the gate: not the identity at alpha = 0", ("torch.tanh(self.alpha)", "torch.sigmoid(self.alpha)")),
    m("1.6 no residual", "1.6", "the residual y + ... is missing", ("return y + torch.tanh", "return torch.tanh")),
    m("1.6 mask dropped", "1.6", "the mask is not passed on", ("self.xattn(y, context, mask)", "self.xattn(y, context)"), named="mask must be passed on"),
    # 2.1 MLP
    m("2.1 relu", "2.1", "ReLU instead of GELU", ("F.gelu(", "F.relu(")),
    m("2.1 tanh gelu", "2.1", "the tanh approximation of GELU instead of the exact one", ("F.gelu(self.fc1(x))", "F.gelu(self.fc1(x), approximate='tanh')")),
    m("2.1 gelu after fc2", "2.1", "GELU after fc2 instead of between fc1 and fc2",
      ("x = self.drop(F.gelu(self.fc1(x)))", "x = self.drop(self.fc1(x))"), ("return self.drop(self.fc2(x))", "return self.drop(F.gelu(self.fc2(x)))")),
    m("2.1 no dropout after fc2", "2.1", "no dropout after fc2", ("return self.drop(self.fc2(x))", "return self.fc2(x)"), named="dropout after fc2"),
    m("2.1 dropout in eval", "2.1", "dropout also in eval() mode",
      ("return self.drop(self.fc2(x))", "return F.dropout(self.fc2(x), self.drop.p, training=True)"), named="eval() mode"),
    # 2.2 LayerNorm
    m("2.2 unbiased variance", "2.2", "LayerNorm with the unbiased variance (divides by D - 1)",
      (".pow(2).mean(dim=-1, keepdim=True)", ".pow(2).sum(dim=-1, keepdim=True) / (x.shape[-1] - 1)")),
    m("2.2 wrong axis", "2.2", "LayerNorm over the wrong axis (the tokens, not the features)", ("dim=-1", "dim=-2")),
    m("2.2 eps outside", "2.2", "eps added outside the square root", ("torch.sqrt(var + self.eps)", "(torch.sqrt(var) + self.eps)")),
    m("2.2 no affine", "2.2", "weight and bias not applied", (" * self.weight + self.bias", "")),
    m("2.2 calls F.layer_norm", "2.2", "calls PyTorch's fused LayerNorm",
      ("return (x - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias",
       "return F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)"), named="written by hand"),
    # 2.3 EncoderBlock
    m("2.3 no first residual", "2.3", "the residual connection around attention is missing", ("x = x + y  # first", "x = y  # first")),
    m("2.3 norm1 twice", "2.3", "norm1 used before the MLP too (norm2 unused)", ("self.mlp(self.norm2(x))", "self.mlp(self.norm1(x))")),
    m("2.3 residual of normalised x", "2.3", "the residual adds the normalised x, not x",
      ("y = self.attn(self.norm1(x), mask=mask", "x = self.norm1(x)\n        y = self.attn(x, mask=mask")),
    m("2.3 mask dropped", "2.3", "the mask is not passed on", ("mask=mask, need_weights", "need_weights")),
    m("2.3 post-norm", "2.3", "post-norm layout in the pre-norm block",
      ("y = self.attn(self.norm1(x), mask=mask", "y = self.attn(x, mask=mask"), ("x = x + y  # first", "x = self.norm1(x + y)  # first"),
      ("x = x + self.mlp(self.norm2(x))", "x = self.norm2(x + self.mlp(x))")),
    # 2.4 PostNormEncoderBlock
    m("2.4 no residual", "2.4", "the residual connection around attention is missing", ("x = self.norm1(x + y)", "x = self.norm1(y)")),
    m("2.4 norms swapped", "2.4", "norm1 and norm2 swapped",
      ("x = self.norm1(x + y)", "x = self.norm2(x + y)"), ("x = self.norm2(x + self.mlp(x))", "x = self.norm1(x + self.mlp(x))")),
    m("2.4 pre-norm", "2.4", "pre-norm layout in the post-norm block",
      ("y = self.attn(x, mask", "y = self.attn(self.norm1(x), mask"), ("x = self.norm1(x + y)", "x = x + y"),
      ("x = self.norm2(x + self.mlp(x))", "x = x + self.mlp(self.norm2(x))")),
    m("2.4 mask dropped", "2.4", "the mask is not passed on", ("mask=mask, need_weights", "need_weights")),
    # 3.1 patchify
    m("3.1 channels last", "3.1", "patch pixels flattened in (P, P, C) order instead of (C, P, P)",
      ("x.permute(0, 2, 4, 1, 3, 5)", "x.permute(0, 2, 4, 3, 5, 1)")),
    m("3.1 column-major", "3.1", "patches in column-major order instead of row-major", ("x.permute(0, 2, 4, 1, 3, 5)", "x.permute(0, 4, 2, 1, 3, 5)")),
    m("3.1 no permute", "3.1", "a reshape without the permute mixes pixels of different patches", ("x = x.permute(0, 2, 4, 1, 3, 5)", "x = x")),
    # 3.2 PatchEmbedding
    m("3.2 reshape not transpose", "3.2", "(B, D, N) reshaped to (B, N, D) instead of transposed",
      ("return x.flatten(2).transpose(1, 2)", "return x.flatten(2).reshape(x.shape[0], -1, x.shape[1])")),
    m("3.2 H and W swapped", "3.2", "the image's height and width swapped", ("x = self.proj(x)", "x = self.proj(x.transpose(2, 3))")),
    m("3.2 activation", "3.2", "an activation after the patch projection", ("x = self.proj(x)", "x = torch.relu(self.proj(x))")),
    # 3.3 sinusoidal_position_embedding
    m("3.3 sin cos swapped", "3.3", "sin and cos swapped (cos at even features)",
      ("pe[:, 0::2] = torch.sin(angle)", "pe[:, 0::2] = torch.cos(angle)"), ("pe[:, 1::2] = torch.cos(angle)", "pe[:, 1::2] = torch.sin(angle)")),
    m("3.3 halves", "3.3", "sin and cos in two halves instead of interleaved", ("pe[:, 0::2]", "pe[:, : dim // 2]"), ("pe[:, 1::2]", "pe[:, dim // 2 :]")),
    m("3.3 exponent i/D", "3.3", "exponent i/D instead of 2i/D", ("two_i = torch.arange(0, dim, 2,", "two_i = torch.arange(0, dim // 2,")),
    m("3.3 base ignored", "3.3", "the base argument is ignored (always 10000)", ("angle = pos / base **", "angle = pos / 10000.0 **")),
    # 3.4 sincos_2d_position_embedding
    m("3.4 y before x", "3.4", "y frequencies before x: [sin y, cos y, sin x, cos x]",
      ("[x.sin(), x.cos(), y.sin(), y.cos()]", "[y.sin(), y.cos(), x.sin(), x.cos()]")),
    m("3.4 sin cos swapped", "3.4", "sin and cos swapped", ("[x.sin(), x.cos(), y.sin(), y.cos()]", "[x.cos(), x.sin(), y.cos(), y.sin()]")),
    m("3.4 omega over D/4", "3.4", "frequencies f / (D/4) instead of f / (D/4 - 1)", ("max(dim // 4 - 1, 1)", "max(dim // 4, 1)")),
    m("3.4 xy indexing", "3.4", "meshgrid with indexing='xy': rows in column-major order", ('indexing="ij"', 'indexing="xy"')),
    # 3.5 ClassTokenPositionEmbedding
    m("3.5 cls last", "3.5", "the class token appended last instead of first", ("torch.cat([cls, x], dim=1)", "torch.cat([x, cls], dim=1)")),
    m("3.5 no pos on cls", "3.5", "the position embedding not added to the class token",
      ("x = torch.cat([cls, x], dim=1)", "x = torch.cat([cls, x + self.pos_embedding[:, 1:]], dim=1)"), ("return x + self.pos_embedding", "return x")),
    m("3.5 no pos", "3.5", "the position embedding is not added", ("return x + self.pos_embedding", "return x")),
    # 4.1 VisionTransformer
    m("4.1 head on mean", "4.1", "the head reads the mean of the tokens instead of the class token",
      ("return self.head(tokens[:, 0])", "return self.head(tokens.mean(dim=1))")),
    m("4.1 head on last token", "4.1", "the head reads the last token instead of the class token (token 0)", ("tokens[:, 0]", "tokens[:, -1]")),
    m("4.1 no final norm", "4.1", "the final LayerNorm is missing", ("x = self.norm(x)  # (B, N+1, D)", "x = x")),
    m("4.1 no embed", "4.1", "the class token and position embedding are skipped",
      ("x = self.drop(self.embed(self.patch_embed(x)))", "x = self.drop(torch.cat([self.patch_embed(x)[:, :1], self.patch_embed(x)], dim=1))")),
    # 5.1 mean_attention_distance
    m("5.1 no renormalisation", "5.1", "weights not renormalised after dropping the class token",
      ("attn = attn / attn.sum(dim=-1, keepdim=True).clamp_min(1e-12)", "attn = attn")),
    m("5.1 squared distance", "5.1", "squared distances instead of distances", ("torch.cdist(centres, centres).to(", "(torch.cdist(centres, centres) ** 2).to(")),
    m("5.1 in patches", "5.1", "distances in patches, not pixels", ("patch_centres((gh, gw), patch_size)", "patch_centres((gh, gw), 1)")),
    m("5.1 cls ignored", "5.1", "has_cls ignored: the class token is always dropped", ("if has_cls:", "if True:"), named="has_cls=False"),
    # 5.2 fit_power_law
    m("5.2 alpha sign", "5.2", "alpha with the wrong sign", ("return math.exp(-intercept / slope), -slope", "return math.exp(-intercept / slope), slope")),
    m("5.2 x_c sign", "5.2", "x_c = exp(+intercept / slope)", ("math.exp(-intercept / slope)", "math.exp(intercept / slope)")),
    m("5.2 base 10", "5.2", "x_c exponentiated base 10 after a natural-log fit", ("math.exp(-intercept / slope)", "10 ** (-intercept / slope)")),
    m("5.2 tensors", "5.2", "tensors returned instead of Python floats",
      ("return math.exp(-intercept / slope), -slope", "return torch.tensor(math.exp(-intercept / slope)), torch.tensor(-slope)"),
      named="Python floats"),
    # 5.3 count_parameters
    m("5.3 no class token", "5.3", "the class token not counted", ("tokens = D + (N + 1) * D", "tokens = (N + 1) * D")),
    m("5.3 no attention biases", "5.3", "the attention biases not counted", ("(4 * D * D + 4 * D)", "(4 * D * D)")),
    m("5.3 one norm per block", "5.3", "one LayerNorm per block instead of two", ("2 * (2 * D) + (4", "(2 * D) + (4")),
    m("5.3 no final norm", "5.3", "the final LayerNorm not counted", ("c.depth * block + 2 * D + (D * K + K)", "c.depth * block + (D * K + K)")),
    # 5.4 count_flops
    m("5.4 MACs", "5.4", "multiply-adds counted once (a multiply-add is 2 FLOPs)",
      ("patch = 2 * N *", "patch = N *"), ("block = 2 * T * D * 3 * D + 2 * 2 * T * T * D + 2 * T * D * D + 2 * 2 * T * D * c.mlp_dim",
                                          "block = T * D * 3 * D + 2 * T * T * D + T * D * D + 2 * T * D * c.mlp_dim"),
      ("2 * D * c.num_classes", "D * c.num_classes")),
    m("5.4 no attention matmuls", "5.4", "the attention matmuls (q k^T and weights v) not counted", (" + 2 * 2 * T * T * D", "")),
    m("5.4 no class token", "5.4", "the class token not counted among the tokens", ("T = c.num_patches, c.dim, c.num_patches + 1", "T = c.num_patches, c.dim, c.num_patches")),
    m("5.4 no patch embedding", "5.4", "the patch embedding not counted", ("return patch + c.depth", "return c.depth")),
)
