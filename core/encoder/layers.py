"""The building blocks of the encoder, each matching a module of Hugging Face's DistilBERT.

`DistilBertEmbeddings` (word + position, LayerNorm, dropout), `MultiHeadSelfAttention`
(q/k/v/out projections, softmax in float32), `FeedForward` (lin1, activation, lin2, dropout)
and `TransformerBlock` (post-LN: ``sa_layer_norm(attn(x) + x)``, then
``output_layer_norm(ffn(h) + h)``). Sublayer names follow the Hugging Face module names so
the checkpoint mapping in `checkpoints.py` reads as a table.

Speed: the projections run on the flattened ``(batch * length, hidden)`` token matrix through
`dense_2d`, so TensorFlow's oneDNN graph fuses each bias add (and the FFN's exact GELU) into the
matmul; ``benchmarks/README.md`` has the measurements. The numbers are unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
from keras import ops


def bias_add(x: Any, bias: Any) -> Any:
    """``x + bias`` over the last axis.

    On TensorFlow this is ``tf.nn.bias_add``: TensorFlow's graph optimizer (oneDNN remapper) fuses
    ``MatMul -> BiasAdd -> Gelu(exact)`` into one kernel, but not ``MatMul -> AddV2 -> Gelu``,
    which costs five more passes over the (tokens x intermediate) activations. Other backends
    add; their compilers fuse either form. A layer without a bias (``use_bias=False``) gives None: ``x``.
    """
    if bias is None:
        return x
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf  # only on the TensorFlow backend

        return tf.nn.bias_add(x, bias)
    return ops.add(x, bias)


def dense_2d(
    layer: keras.layers.Dense,
    tokens: Any,
    training: bool | None = None,
    activation: Callable[[Any], Any] | None = None,
) -> Any:
    """``activation(layer(tokens))`` for a (tokens, features) matrix: one 2-D matmul, a fusable bias add.

    A Dense layer on a 3-D input runs as tensordot (reshape, matmul, reshape, add) and nothing
    fuses; on a 2-D input the bias (and an activation after it) fuse into the matmul.
    Called from inside a parent layer, so under mixed precision the kernel is read in the
    compute dtype. An int8-quantized layer runs `int8_dense_2d` at inference; a LoRA-enabled
    layer, any other quantization mode, and int8 while training (Keras' own call carries the
    gradient through the quantized kernel) run the layer's own ``call``. ``activation`` (None: none)
    follows the bias: on the float path as ``activation(bias_add(matmul))``, the graph oneDNN fuses
    into one kernel; on the int8 path inside the dequantize.
    """
    mode = getattr(layer, "quantization_mode", None)
    if getattr(layer, "lora_enabled", False) or (mode is not None and (mode != "int8" or training)):
        output = layer(tokens)
    elif mode == "int8":
        return int8_dense_2d(layer, tokens, activation)
    else:
        output = bias_add(ops.matmul(tokens, layer.kernel), layer.bias)
    return output if activation is None else activation(output)


def int8_matmul(left: Any, right: Any) -> Any:
    """The int32 product of two int8 matrices on the backend's fast integer GEMM.

    Keras' ``ops.matmul`` asks each backend for an int32 result, but the kernels it gets are not
    all fast on the CPU. TensorFlow's graph-mode int8 MatMul is a generic kernel 2-3x slower than
    its float32 GEMM, while XLA's is faster than float32: the product runs as a small XLA-compiled
    function (`_tf_int8_matmul`), also inside a graph that is not compiled as a whole (the
    ``predict_on_batch`` pipelines use). Torch: Keras uses ``torch._int_mm`` only on CUDA and
    otherwise a generic integer matmul several times slower than float32; ``torch._int_mm`` runs
    on the CPU too (oneDNN, VNNI/AMX where present). JAX: ``preferred_element_type=int32``, as is.
    """
    backend = keras.backend.backend()
    if backend == "torch":
        import torch  # only on the torch backend

        return torch._int_mm(ops.convert_to_tensor(left).contiguous(), ops.convert_to_tensor(right).contiguous())
    if backend == "tensorflow":
        return _tf_int8_matmul()(ops.convert_to_tensor(left), ops.convert_to_tensor(right))
    return ops.matmul(left, right)


@functools.cache
def _tf_int8_matmul() -> Any:
    """``tf.matmul(int8, int8) -> int32`` compiled by XLA, made once per process."""
    import tensorflow as tf  # only on the TensorFlow backend

    return tf.function(lambda left, right: tf.matmul(left, right, output_type=tf.int32), jit_compile=True)


def int8_dense_2d(layer: keras.layers.Dense, tokens: Any, activation: Callable[[Any], Any] | None = None) -> Any:
    """An int8-quantized ``Dense`` (``layer.quantize("int8")``) on a (tokens, features) matrix.

    The same arithmetic as Keras' ``Dense._int8_call``: each token row is quantized to int8 by the
    layer's input quantizer (absolute maximum per row), multiplied by the int8 kernel into int32
    (`int8_matmul`), then scaled back by the row's and each output column's scales; the bias is
    added with `bias_add` so it fuses, then ``activation`` (None: none). A weight-only layer (no input
    quantizer) runs its own call. On TensorFlow the whole layer runs as `_tf_int8_dense` (the
    elementwise passes fused by XLA around oneDNN's integer GEMM); the numbers are the same.
    """
    quantizer = layer.inputs_quantizer
    if not quantizer:
        output = layer(tokens)
        return output if activation is None else activation(output)
    if keras.backend.backend() == "tensorflow":
        return _tf_int8_dense(layer, tokens, activation)
    quantized, row_scale = quantizer(tokens, axis=-1)
    product = ops.cast(int8_matmul(quantized, layer._kernel.value), layer.compute_dtype)
    output = bias_add(ops.divide(product, ops.multiply(row_scale, layer.kernel_scale)), layer.bias)
    return output if activation is None else activation(output)


def _tf_int8_dense(layer: keras.layers.Dense, tokens: Any, activation: Callable[[Any], Any] | None) -> Any:
    """`int8_dense_2d` on TensorFlow in three steps instead of a dozen ops.

    Profiled at 32 x 128 (``benchmarks/profile_ops.py --int8``), the int8 GEMM on XLA took most of
    the time and the quantize/dequantize passes around it (abs, max, divide, multiply, round, clip,
    cast, divide, bias add: each a pass over the activations) another eighth. Here (1) one XLA
    function quantizes the rows, (2) oneDNN's ``QuantizedMatMulWithBias`` multiplies them on the
    CPU's integer units (VNNI/AMX: about 2.5x XLA's int8 GEMM), (3) one XLA function dequantizes,
    adds the bias and applies ``activation`` (lin1's GELU: two fewer passes over the widest
    activations). oneDNN's kernel takes unsigned activations: the rows go in shifted by +128 and the
    int32 bias ``-128 * column sums of the kernel`` takes the shift back out, so the int32 product is
    exactly the signed one. That correction depends on the kernel alone, so it is kept in a variable
    refreshed when the kernel is written (`_tf_derived_variable`) instead of summed over the kernel
    each call (at batch 1 as much memory traffic as the GEMM). Inside a function XLA compiles as a
    whole (``jit_compile``), or where TensorFlow was built without oneDNN, the same arithmetic runs
    as plain ops (XLA fuses).

    Measured A/B interleaved in one process (DistilBERT-base, TF graph, 2 CPU cores shared with a
    heavy load; time new / old at 32x128 and 1x128): the kept correction 0.99, 0.76-0.81; GELU in
    the dequantize 0.92, 0.95-0.98. Tried and dropped: q, k and v on one quantized input and one GEMM
    over the three kernels concatenated (the concatenation kept like the correction) 1.01-1.03,
    0.98-1.02, also with the split left to slices outside XLA (1.04, 1.05).
    """
    import tensorflow as tf  # only on the TensorFlow backend
    from tensorflow.python.ops import control_flow_util  # the one public-enough test for "inside XLA"

    quantizer = layer.inputs_quantizer
    low, high = quantizer.value_range
    kernel, kernel_scale = layer._kernel.value, layer.kernel_scale.value
    bias = layer.bias.value if layer.bias is not None else None
    dequantize = _tf_int8_dequantize(activation)
    tokens = tf.convert_to_tensor(tokens)
    in_xla = control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())
    if in_xla or not _tf_onednn_int8_gemm_available():
        quantized, row_scale = quantizer(tokens, axis=-1)
        product = tf.matmul(quantized, kernel, output_type=tf.int32) if in_xla else _tf_int8_matmul()(quantized, kernel)
        return dequantize(product, row_scale, kernel_scale, bias, layer.compute_dtype)
    correction = _tf_derived_variable(layer._kernel, "shift_correction", _tf_int8_shift_correction)
    shifted, row_scale = _tf_int8_quantize_shifted()(tokens, float(low), float(high), quantizer.epsilon)
    product = tf.raw_ops.QuantizedMatMulWithBias(
        a=tf.bitcast(shifted, tf.quint8),
        b=tf.bitcast(kernel, tf.qint8),
        bias=tf.bitcast(tf.convert_to_tensor(correction), tf.qint32),
        min_a=0.0,
        max_a=1.0,
        min_b=-1.0,
        max_b=1.0,
        Toutput=tf.qint32,
    )[0]
    return dequantize(tf.bitcast(product, tf.int32), row_scale, kernel_scale, bias, layer.compute_dtype)


def _tf_int8_shift_correction(kernel: Any) -> Any:
    """``-128 * column sums`` of an int8 kernel: the int32 bias that undoes the +128 row shift."""
    import tensorflow as tf  # only on the TensorFlow backend

    return -128 * tf.reduce_sum(tf.cast(kernel, tf.int32), axis=0)


def _tf_derived_variable(source: Any, name: str, compute: Callable[[Any], Any]) -> Any:
    """A ``tf.Variable`` holding ``compute(source's value)``, recomputed whenever ``source`` is written.

    ``source`` is a Keras variable (an int8 kernel). Every write Keras makes to it (``assign``:
    ``set_weights``, ``load_weights``, loading a ``.keras`` file) goes through its
    ``_direct_assign``, which is wrapped once per variable to refresh what was derived from it, in
    the same graph when the write is traced. ``quantize`` makes a new kernel variable, so nothing
    stale survives it. Kept on the source, not on the layer: a layer's attributes are tracked
    (weights lists, checkpoints). A write around Keras (``variable.value.assign``) is not seen.
    """
    import tensorflow as tf  # only on the TensorFlow backend

    derived = source.__dict__.setdefault("_distilbert_heads_derived", {})
    if name not in derived:
        with tf.init_scope():  # created once, eagerly, also when first met while tracing
            variable = tf.Variable(compute(source.value), trainable=False, name=f"{name}_derived")
        refreshers = source.__dict__.get("_distilbert_heads_refreshers")
        if refreshers is None:
            refreshers = source.__dict__["_distilbert_heads_refreshers"] = []
            direct_assign = source._direct_assign

            def assign_and_refresh(value: Any) -> None:
                direct_assign(value)
                for refresh in refreshers:
                    refresh()

            source._direct_assign = assign_and_refresh
        refreshers.append(lambda: variable.assign(compute(source.value)))
        derived[name] = variable
    return derived[name]


@functools.cache
def _tf_int8_quantize_shifted() -> Any:
    """XLA: Keras' ``abs_max_quantize`` of each row, shifted to uint8 (+128), and its scale, one compiled function."""
    import tensorflow as tf  # only on the TensorFlow backend

    def quantize(tokens: Any, low: float, high: float, epsilon: float) -> Any:
        scale = tf.cast(high / (tf.reduce_max(tf.abs(tokens), axis=-1, keepdims=True) + epsilon), tokens.dtype)
        quantized = tf.cast(tf.clip_by_value(tf.round(tokens * scale), low, high), tf.int32)
        return tf.cast(quantized + 128, tf.uint8), scale

    return tf.function(quantize, jit_compile=True, autograph=False)


@functools.cache
def _tf_int8_dequantize(activation: Callable[[Any], Any] | None) -> Any:
    """XLA: ``activation(int32 product / (row scale * column scale) + bias)`` in the compute dtype, one fused
    loop; one compiled function per activation (`activation_fn` gives one function per name)."""
    import tensorflow as tf  # only on the TensorFlow backend

    def dequantize(product: Any, row_scale: Any, kernel_scale: Any, bias: Any, dtype: str) -> Any:
        output = tf.cast(product, dtype) / (row_scale * kernel_scale)
        output = output if bias is None else output + bias
        return output if activation is None else activation(output)

    return tf.function(dequantize, jit_compile=True, autograph=False)


@functools.cache
def _tf_onednn_int8_gemm_available() -> bool:
    """Whether this TensorFlow has oneDNN's ``QuantizedMatMulWithBias`` (x86 builds with oneDNN on)."""
    import tensorflow as tf  # only on the TensorFlow backend

    try:
        tf.raw_ops.QuantizedMatMulWithBias(
            a=tf.zeros([1, 4], tf.quint8),
            b=tf.zeros([4, 1], tf.qint8),
            bias=tf.zeros([1], tf.qint32),
            min_a=0.0,
            max_a=1.0,
            min_b=-1.0,
            max_b=1.0,
            Toutput=tf.qint32,
        )
    except (tf.errors.NotFoundError, tf.errors.InvalidArgumentError, tf.errors.UnimplementedError):
        return False
    return True


# Added to the attention scores of masked keys. Large enough that exp() underflows to exactly 0
# in float32 (as Hugging Face's dtype-min fill does), small enough that a row with every key
# masked still gives a finite, uniform softmax instead of NaN.
MASKED_SCORE = -1e9


def sinusoidal_position_table(num_positions: int, dim: int) -> np.ndarray:
    """The fixed table of Hugging Face's ``sinusoidal_pos_embds``: sin on even, cos on odd columns."""
    positions = np.arange(num_positions, dtype=np.float64)[:, None]
    rates = np.power(10000.0, 2 * (np.arange(dim) // 2) / dim)[None, :]
    angles = positions / rates
    table = np.empty((num_positions, dim), dtype=np.float64)
    table[:, 0::2] = np.sin(angles[:, 0::2])
    table[:, 1::2] = np.cos(angles[:, 1::2])
    return table.astype(np.float32)


def normal_initializer(stddev: float) -> keras.initializers.Initializer:
    """A fresh ``N(0, stddev)`` initializer; call once per weight.

    An unseeded Keras initializer fixes its seed when it is created, so one instance shared by
    several layers gives them all the same values (q, k, v and out would start identical).
    """
    return keras.initializers.RandomNormal(stddev=stddev)


@functools.cache
def activation_fn(name: str):
    """The activation Hugging Face means by ``name`` (``gelu`` is the exact erf form); one function per name
    (compiled functions that take it, `_tf_int8_dequantize`, are made once per activation)."""
    if name == "gelu":
        return lambda x: ops.gelu(x, approximate=False)
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return lambda x: ops.gelu(x, approximate=True)
    if name == "relu":
        return ops.relu
    if name in ("silu", "swish"):
        return ops.silu
    raise ValueError(f"Unknown activation {name!r}; expected gelu, gelu_new, gelu_pytorch_tanh, relu, silu or swish")


class DistilBertEmbeddings(keras.layers.Layer):
    """Word plus position embeddings, then LayerNorm and dropout. No token-type embeddings."""

    def __init__(
        self,
        vocab_size: int,
        hidden_size: int,
        max_position_embeddings: int,
        sinusoidal_pos_embds: bool,
        initializer_range: float,
        layer_norm_eps: float,
        dropout_rate: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.word_embeddings = keras.layers.Embedding(
            vocab_size,
            hidden_size,
            embeddings_initializer=normal_initializer(initializer_range),
            dtype=self.dtype_policy,
            name="word_embeddings",
        )
        if sinusoidal_pos_embds:
            table = sinusoidal_position_table(max_position_embeddings, hidden_size)
            position_init: Any = keras.initializers.Constant(table)
        else:
            position_init = normal_initializer(initializer_range)
        self.position_embeddings = keras.layers.Embedding(
            max_position_embeddings,
            hidden_size,
            embeddings_initializer=position_init,
            trainable=not sinusoidal_pos_embds,
            dtype=self.dtype_policy,
            name="position_embeddings",
        )
        self.layer_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_eps, dtype=self.dtype_policy, name="LayerNorm"
        )
        self.dropout = keras.layers.Dropout(dropout_rate, dtype=self.dtype_policy)
        self.hidden_size = hidden_size

    def build(self, input_shape: Any = None) -> None:
        self.word_embeddings.build((None, None))
        self.position_embeddings.build((None, None))
        self.layer_norm.build((None, None, self.hidden_size))
        self.built = True

    def call(self, input_ids: Any, position_ids: Any, training: bool | None = None) -> Any:
        embeddings = self.word_embeddings(input_ids) + self.position_embeddings(position_ids)
        return self.dropout(self.layer_norm(embeddings), training=training)


@functools.cache
def on_accelerator() -> bool:
    """Whether this process's Keras backend computes on a GPU (or TPU): fixed for the process."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax  # only on the JAX backend

        return jax.default_backend() != "cpu"
    if backend == "torch":
        import torch  # only on the torch backend

        return torch.cuda.is_available()
    if backend == "tensorflow":
        import tensorflow as tf  # only on the TensorFlow backend

        return bool(tf.config.list_physical_devices("GPU"))
    return False


def use_fused_attention() -> bool:
    """Whether attention runs as one ``keras.ops.dot_product_attention``: under torch, and under JAX on a GPU.

    The fused op does our arithmetic (float32 scores and softmax also for bf16, padded keys never
    attended, a row with every key masked finite). On a GPU it is a fused kernel: cuDNN flash
    attention under JAX (Keras picks it at trace time, ``flash_attention=None``, and falls back to
    XLA where cuDNN refuses the dtype or shapes; ``benchmarks/gpu.py`` reads which one compiled),
    PyTorch's ``scaled_dot_product_attention`` under torch. On TensorFlow it is an einsum like ours
    plus a select for the mask, with no fused kernel behind it. On the CPU only torch's fused kernel
    gains a little; TensorFlow and JAX keep the tuned unfused path there. Measured A/B interleaved
    in one process (DistilBERT-base, random weights, 2 CPU cores shared with a heavy load; time
    fused / unfused at 32x128 and 1x128, > 1: fused slower):
    TensorFlow graph 32x128 1.03, 1x128 1.02; TensorFlow XLA 1.00, 1.01; JAX jit 1.03, 1.01;
    torch eager 0.97, 0.98. GPU figures: to be taken with ``benchmarks/gpu.py``.
    """
    backend = keras.backend.backend()
    return backend == "torch" or (backend == "jax" and on_accelerator())


def use_fused_qkv() -> bool:
    """Whether q, k and v are one matmul over the three kernels concatenated in the call: on a GPU.

    The variables stay three ``Dense`` layers (checkpoints and saved files unchanged); the call
    concatenates the kernels (7 MB per layer at base size), which a GPU copies in microseconds and
    which turns three GEMM launches and three reads of the tokens into one. On the CPU the copy
    costs more than it saves. Measured as in `use_fused_attention` (time fused / three matmuls):
    TensorFlow graph 32x128 0.97, 1x128 1.04; TensorFlow XLA 1.06, 1.03; JAX jit 1.07, 1.38;
    torch eager 0.95, 1.01 (kept off on the CPU: batch-1 latency is where we trail).
    """
    return on_accelerator()


class MultiHeadSelfAttention(keras.layers.Layer):
    """Scaled dot-product self-attention over a padding mask; scores and softmax in float32.

    Two paths with the same arithmetic: ``keras.ops.dot_product_attention`` (fused, cuDNN flash
    attention where JAX finds it; `use_fused_attention` says on which backends) and the unfused
    einsum path, which training with attention dropout always takes (the fused op has no
    dropout). q, k and v run as one matmul (`use_fused_qkv`) unless a projection is quantized
    or LoRA-enabled: those go through `dense_2d` one by one.
    """

    def __init__(
        self, hidden_size: int, num_heads: int, attention_dropout_rate: float, initializer_range: float, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.head_size = hidden_size // num_heads

        def projection(name: str) -> keras.layers.Dense:
            return keras.layers.Dense(
                hidden_size,
                kernel_initializer=normal_initializer(initializer_range),
                dtype=self.dtype_policy,
                name=name,
            )

        self.q_lin = projection("q_lin")
        self.k_lin = projection("k_lin")
        self.v_lin = projection("v_lin")
        self.out_lin = projection("out_lin")
        self.dropout = keras.layers.Dropout(attention_dropout_rate, dtype=self.dtype_policy)

    def build(self, input_shape: Any = None) -> None:
        for projection in (self.q_lin, self.k_lin, self.v_lin, self.out_lin):
            projection.build((None, None, self.hidden_size))
        self.built = True

    def _split_heads(self, x: Any, batch: Any, length: Any) -> Any:
        return ops.reshape(x, (batch, length, self.num_heads, self.head_size))

    def _plain_projections(self) -> bool:
        """Whether q, k and v are plain float Dense layers (not quantized, not LoRA): they may fuse."""
        return not any(
            getattr(layer, "quantization_mode", None) is not None or getattr(layer, "lora_enabled", False)
            for layer in (self.q_lin, self.k_lin, self.v_lin)
        )

    def _query_key_value(self, tokens: Any, batch: Any, length: Any, training: bool | None) -> tuple[Any, Any, Any]:
        """Unscaled q, k, v as (B, L, H, D): one matmul over the concatenated kernels, or three `dense_2d`."""
        if use_fused_qkv() and self._plain_projections():
            layers = (self.q_lin, self.k_lin, self.v_lin)
            kernel = ops.concatenate([layer.kernel for layer in layers], axis=1)
            bias = ops.concatenate([layer.bias for layer in layers], axis=0)
            fused = ops.reshape(
                bias_add(ops.matmul(tokens, kernel), bias), (batch, length, 3, self.num_heads, self.head_size)
            )
            return fused[:, :, 0], fused[:, :, 1], fused[:, :, 2]
        return tuple(
            self._split_heads(dense_2d(layer, tokens, training), batch, length)
            for layer in (self.q_lin, self.k_lin, self.v_lin)
        )

    def call(self, hidden_states: Any, attention_mask: Any, training: bool | None = None) -> Any:
        """``attention_mask`` is (B, L), 1 for real tokens and 0 for padding (keys never attended)."""
        batch, length = ops.shape(hidden_states)[0], ops.shape(hidden_states)[1]
        # Projections on the (B*L, D) token matrix: plain 2-D matmuls with fused bias adds.
        tokens = ops.reshape(hidden_states, (-1, self.hidden_size))
        query, key, value = self._query_key_value(tokens, batch, length, training)
        scale = 1.0 / float(np.sqrt(self.head_size))
        if use_fused_attention() and not (training and self.dropout.rate > 0):
            context = self._fused_attention(query, key, value, attention_mask, scale)
        else:
            context = self._unfused_attention(query, key, value, attention_mask, scale, training)
        context = ops.reshape(context, (-1, self.hidden_size))
        return ops.reshape(dense_2d(self.out_lin, context, training), (batch, length, self.hidden_size))

    def _fused_attention(self, query: Any, key: Any, value: Any, attention_mask: Any, scale: float) -> Any:
        """``keras.ops.dot_product_attention``: float32 scores and softmax on every backend, also for bf16.

        The padding goes in as a boolean mask (Keras fills masked scores with a finite
        ``-0.7 * dtype max``, so a row with every key masked stays finite, also in float16). JAX's
        cuDNN kernel wants the mask as long as the queries, hence the broadcast to (B, 1, L, L).
        """
        length = ops.shape(query)[1]
        keys = ops.cast(attention_mask, "bool")[:, None, None, :]
        if keras.backend.backend() == "jax":
            keys = ops.broadcast_to(keys, (ops.shape(query)[0], 1, length, length))
        return ops.dot_product_attention(query, key, value, mask=keys, scale=scale, flash_attention=None)

    def _unfused_attention(
        self, query: Any, key: Any, value: Any, attention_mask: Any, scale: float, training: bool | None
    ) -> Any:
        # Built here rather than passed in as floats: Keras would cast a float bias to float16.
        key_bias = (1.0 - ops.cast(attention_mask, "float32")) * MASKED_SCORE
        key_bias = key_bias[:, None, None, :]
        # The query is scaled before the product, as Hugging Face does (fewer elements than the scores).
        query = query * ops.cast(scale, self.compute_dtype)
        scores = ops.cast(ops.einsum("bqhd,bkhd->bhqk", query, key), "float32") + key_bias
        weights = ops.softmax(scores, axis=-1)
        weights = self.dropout(ops.cast(weights, self.compute_dtype), training=training)
        return ops.einsum("bhqk,bkhd->bqhd", weights, value)


class FeedForward(keras.layers.Layer):
    """``lin2(activation(lin1(x)))`` followed by dropout."""

    def __init__(
        self,
        hidden_size: int,
        intermediate_size: int,
        hidden_act: str,
        dropout_rate: float,
        initializer_range: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.activation = activation_fn(hidden_act)
        self.lin1 = keras.layers.Dense(
            intermediate_size,
            kernel_initializer=normal_initializer(initializer_range),
            dtype=self.dtype_policy,
            name="lin1",
        )
        self.lin2 = keras.layers.Dense(
            hidden_size, kernel_initializer=normal_initializer(initializer_range), dtype=self.dtype_policy, name="lin2"
        )
        self.dropout = keras.layers.Dropout(dropout_rate, dtype=self.dtype_policy)

    def build(self, input_shape: Any = None) -> None:
        self.lin1.build((None, None, self.hidden_size))
        self.lin2.build((None, None, self.intermediate_size))
        self.built = True

    def call(self, hidden_states: Any, training: bool | None = None) -> Any:
        shape = ops.shape(hidden_states)
        tokens = ops.reshape(hidden_states, (-1, self.hidden_size))
        # lin1, its bias and the activation fuse into one kernel on TensorFlow (see `bias_add`; int8: `dense_2d`).
        output = dense_2d(self.lin2, dense_2d(self.lin1, tokens, training, self.activation), training)
        return self.dropout(ops.reshape(output, shape), training=training)


class TransformerBlock(keras.layers.Layer):
    """One post-LN encoder block, as Hugging Face's ``TransformerBlock``."""

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        intermediate_size: int,
        hidden_act: str,
        dropout_rate: float,
        attention_dropout_rate: float,
        initializer_range: float,
        layer_norm_eps: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.hidden_size = hidden_size
        self.attention = MultiHeadSelfAttention(
            hidden_size, num_heads, attention_dropout_rate, initializer_range, dtype=self.dtype_policy, name="attention"
        )
        self.sa_layer_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_eps, dtype=self.dtype_policy, name="sa_layer_norm"
        )
        self.ffn = FeedForward(
            hidden_size,
            intermediate_size,
            hidden_act,
            dropout_rate,
            initializer_range,
            dtype=self.dtype_policy,
            name="ffn",
        )
        self.output_layer_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_eps, dtype=self.dtype_policy, name="output_layer_norm"
        )

    def build(self, input_shape: Any = None) -> None:
        self.attention.build()
        self.ffn.build()
        self.sa_layer_norm.build((None, None, self.hidden_size))
        self.output_layer_norm.build((None, None, self.hidden_size))
        self.built = True

    def call(self, hidden_states: Any, attention_mask: Any, training: bool | None = None) -> Any:
        attended = self.sa_layer_norm(self.attention(hidden_states, attention_mask, training=training) + hidden_states)
        return self.output_layer_norm(self.ffn(attended, training=training) + attended)
