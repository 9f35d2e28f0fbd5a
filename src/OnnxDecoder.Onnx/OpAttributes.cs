using static OnnxDecoder.Onnx.Proto.AttributeProto.Types;

namespace OnnxDecoder.Onnx;

/// <summary>
/// Attribute names and types of the ops our graphs use (ai.onnx up to opset 24 and the
/// com.microsoft contrib ops), from the ONNX operator specification and ONNX Runtime's contrib op
/// documentation. The checker rejects an unknown attribute or a wrong type on these ops; ops not
/// listed get only the generic attribute checks.
/// </summary>
internal static class OpAttributes
{
    private const AttributeType I = AttributeType.Int, F = AttributeType.Float, S = AttributeType.String,
        Is = AttributeType.Ints, Fs = AttributeType.Floats, T = AttributeType.Tensor;

    private static readonly (string Domain, string Op, (string Name, AttributeType Type)[] Attributes)[] Table =
    [
        ("", "Add", []), ("", "Sub", []), ("", "Mul", []), ("", "Div", []), ("", "Pow", []), ("", "MatMul", []),
        ("", "Sqrt", []), ("", "Reciprocal", []), ("", "Neg", []), ("", "Exp", []), ("", "Tanh", []), ("", "Sigmoid", []),
        ("", "Erf", []), ("", "Identity", []), ("", "Where", []), ("", "Equal", []), ("", "Less", []), ("", "Greater", []),
        ("", "LessOrEqual", []), ("", "GreaterOrEqual", []), ("", "Not", []), ("", "And", []), ("", "Or", []),
        ("", "Range", []), ("", "Expand", []), ("", "Max", []), ("", "Min", []), ("", "Abs", []), ("", "Cos", []),
        ("", "Sin", []), ("", "Floor", []), ("", "Sum", []), ("", "Size", []), ("", "Unsqueeze", []), ("", "Squeeze", []),
        ("", "Slice", []), ("", "Tile", []), ("", "Clip", []), ("", "Relu", []),
        ("", "Shape", [("start", I), ("end", I)]),
        ("", "Softmax", [("axis", I)]),
        ("", "LogSoftmax", [("axis", I)]),
        ("", "Gather", [("axis", I)]),
        ("", "GatherElements", [("axis", I)]),
        ("", "GatherND", [("batch_dims", I)]),
        ("", "Reshape", [("allowzero", I)]),
        ("", "Transpose", [("perm", Is)]),
        ("", "Concat", [("axis", I)]),
        ("", "Split", [("axis", I), ("num_outputs", I)]),
        ("", "Cast", [("to", I), ("saturate", I)]),
        ("", "CastLike", [("saturate", I)]),
        ("", "ReduceMean", [("axes", Is), ("keepdims", I), ("noop_with_empty_axes", I)]),
        ("", "ReduceSum", [("keepdims", I), ("noop_with_empty_axes", I)]),
        ("", "ReduceMax", [("axes", Is), ("keepdims", I), ("noop_with_empty_axes", I)]),
        ("", "LayerNormalization", [("axis", I), ("epsilon", F), ("stash_type", I)]),
        ("", "RMSNormalization", [("axis", I), ("epsilon", F), ("stash_type", I)]),
        ("", "Trilu", [("upper", I)]),
        ("", "TopK", [("axis", I), ("largest", I), ("sorted", I)]),
        ("", "ConstantOfShape", [("value", T)]),
        ("", "Constant", [("value", T), ("value_float", F), ("value_floats", Fs), ("value_int", I), ("value_ints", Is), ("value_string", S)]),
        ("", "CumSum", [("exclusive", I), ("reverse", I)]),
        ("", "ScatterElements", [("axis", I), ("reduction", S)]),
        ("", "ScatterND", [("reduction", S)]),
        ("", "Einsum", [("equation", S)]),
        ("", "Gelu", [("approximate", S)]),
        ("", "Mod", [("fmod", I)]),
        ("", "DequantizeLinear", [("axis", I), ("block_size", I), ("output_dtype", I)]),
        ("com.microsoft", "GroupQueryAttention", [("num_heads", I), ("kv_num_heads", I), ("scale", F), ("do_rotary", I),
            ("rotary_interleaved", I), ("local_window_size", I), ("softcap", F), ("smooth_softmax", I), ("qk_output", I)]),
        ("com.microsoft", "RotaryEmbedding", [("interleaved", I), ("num_heads", I), ("rotary_embedding_dim", I), ("scale", F), ("is_packed_batching", I)]),
        ("", "SimplifiedLayerNormalization", [("axis", I), ("epsilon", F), ("stash_type", I)]), // ONNX Runtime registers it in the default domain
        ("com.microsoft", "SkipSimplifiedLayerNormalization", [("epsilon", F)]),
        ("com.microsoft", "SkipLayerNormalization", [("epsilon", F)]),
        ("com.microsoft", "MoE", [("activation_type", S), ("k", I), ("normalize_routing_weights", I), ("use_sparse_mixer", I),
            ("swiglu_fusion", I), ("activation_alpha", F), ("activation_beta", F), ("swiglu_limit", F)]),
        ("com.microsoft", "MatMulNBits", [("K", I), ("N", I), ("bits", I), ("block_size", I), ("accuracy_level", I)]),
        ("com.microsoft", "GatherBlockQuantized", [("bits", I), ("block_size", I), ("gather_axis", I), ("quantize_axis", I)]),
        ("com.microsoft", "FastGelu", []),
    ];

    public static readonly IReadOnlyDictionary<(string Domain, string Op), IReadOnlyDictionary<string, AttributeType>> Schemas =
        Table.ToDictionary(e => (e.Domain, e.Op), e => (IReadOnlyDictionary<string, AttributeType>)e.Attributes.ToDictionary(a => a.Name, a => a.Type));
}
