using OnnxDecoder.Modeling.Components;
using OnnxDecoder.Onnx;

namespace OnnxDecoder.Modeling.Families;

/// <summary>
/// GPT-OSS (GptOssForCausalLM): Llama's pre-norm layer with
/// <code>
///   attention: q/k/v/o biases (attention_bias, default true); a learned sink logit per query head that
///              joins the softmax's denominator only; sliding_window (128) on layer_types' sliding layers
///              (default: the even layers); yarn rotary (default factor 32, original 4096, truncate false)
///   router:    logits = W x + b; the top num_experts_per_tok logits, softmaxed among themselves
///   experts:   gate_up = x W_gu + b_gu, gate = gate_up[..., ::2], up = gate_up[..., 1::2];
///              gate = min(gate, 7), up = clamp(up, -7, 7); y = ((up + 1) gate sigmoid(1.702 gate)) W_d + b_d
/// </code>
/// Tensor names; the experts are stacked and stored [in, out]:
/// <code>
///   model.layers.{i}.self_attn.sinks                     [heads]
///   model.layers.{i}.mlp.router.weight / .bias           [experts, hidden] / [experts]
///   model.layers.{i}.mlp.experts.gate_up_proj / _bias    [experts, hidden, 2*intermediate] / [experts, 2*intermediate]
///   model.layers.{i}.mlp.experts.down_proj / _bias       [experts, intermediate, hidden] / [experts, hidden]
/// </code>
/// Checkpoints whose experts are MXFP4 (quantization_config mxfp4, *_blocks / *_scales) reach this family dequantized:
/// the Hugging Face folder reader turns each pair into the float [experts, in, out] tensor above.
/// </summary>
public sealed class GptOss : Llama
{
    /// <summary>GptOssExperts' constants: the sigmoid gain and the clamp of its SwiGLU.</summary>
    private const float SwigluAlpha = 1.702f, SwigluLimit = 7f;

    public override string Name => "gpt_oss";
    public override IReadOnlyList<string> ModelTypes => ["gpt_oss"];
    public override IReadOnlyList<string> Architectures => ["GptOssForCausalLM"];
    public override bool HasExperts => true;
    public override string? GgufArchitecture => null;

    // GptOssConfig's defaults where they differ from LlamaConfig's.
    protected override SharedConfigDefaults Defaults => base.Defaults with { NormEps = 1e-5, RopeTheta = 150000 };

    public override DecoderConfig ReadConfig(ConfigFields r, string modelType)
    {
        string source = r.Source;
        // Released GPT-OSS checkpoints store their experts as MXFP4 (*_blocks / *_scales), which the Hugging Face folder
        // reader dequantizes into the float experts this family reads; other quantizations change the tensors themselves.
        if (r.Object("quantization_config") is { } quantization && quantization.String("quant_method") is var method && method != "mxfp4")
            throw new ConfigException(source, "quantization_config", $"(quant_method {method ?? "unnamed"}) is not supported for gpt_oss: only mxfp4 experts are read; "
                + "export a checkpoint whose weights are not quantized (bfloat16 or float32, no quantization_config)");
        if (r.Double("swiglu_limit") is { } limit && limit != SwigluLimit)
            throw new ConfigException(source, "swiglu_limit", $"({limit}) is not supported: GptOssExperts clamps at {SwigluLimit}");
        int layers = r.RequiredInt("num_hidden_layers");
        var slidingTypes = HuggingFaceConfig.ReadSlidingLayerTypes(r);
        bool[] sliding = slidingTypes ?? HuggingFaceConfig.LayerFlags(layers, i => i % 2 == 0);
        int? window = r.Present("sliding_window") ? r.Int("sliding_window") : 128;
        // GptOssModel always builds the sliding mask for its sliding_attention layers, and transformers' sliding mask raises
        // on a null sliding_window, so such a config does not load there either.
        if (window is null && sliding.Any(s => s))
            throw new ConfigException(source, "sliding_window", "is null while layer_types names sliding_attention layers (by default the even layers): "
                + "give the window or mark every layer full_attention");
        var config = base.ReadConfig(r, modelType);
        return config with
        {
            HeadDim = r.Int("head_dim") ?? 64,
            // GptOssConfig's rope default when config.json names none.
            RopeScaling = r.Object("rope_scaling") is null
                ? new RopeScaling { Type = RopeScalingType.Yarn, Factor = 32, OriginalMaxPositions = 4096, BetaFast = 32, BetaSlow = 1, Truncate = false }
                : config.RopeScaling,
            AttentionBias = r.Bool("attention_bias") ?? true,
            NumExperts = r.Int("num_local_experts") ?? r.Int("num_experts") ?? 128,
            ExpertsPerToken = r.Int("num_experts_per_tok") ?? 4,
            NormTopKProb = true,
            SlidingWindow = window,
            SlidingLayers = sliding,
        };
    }

    protected override bool OutputProjectionBias(DecoderConfig c) => c.AttentionBias;

    private static string Sinks(int layer) => $"model.layers.{layer}.self_attn.sinks";

    /// <summary>One layer's router and stacked experts.</summary>
    private sealed record ExpertNames(string Router, string RouterBias, string GateUp, string GateUpBias, string Down, string DownBias);

    private static ExpertNames Experts(int layer)
    {
        string mlp = $"model.layers.{layer}.mlp";
        return new($"{mlp}.router.weight", $"{mlp}.router.bias", $"{mlp}.experts.gate_up_proj", $"{mlp}.experts.gate_up_proj_bias",
            $"{mlp}.experts.down_proj", $"{mlp}.experts.down_proj_bias");
    }

    protected override IEnumerable<TensorSpec> ExtraAttentionSpecs(DecoderConfig c, int layer)
    {
        yield return new(Sinks(layer), [c.NumHeads]);
    }

    protected override IEnumerable<TensorSpec> FeedForwardSpecs(DecoderConfig c, int layer)
    {
        var n = Experts(layer);
        long e = c.NumExperts, hidden = c.HiddenSize, inter = c.IntermediateSize;
        yield return new(n.Router, [e, hidden]);
        yield return new(n.RouterBias, [e]);
        yield return new(n.GateUp, [e, hidden, 2 * inter]);
        yield return new(n.GateUpBias, [e, 2 * inter]);
        yield return new(n.Down, [e, inter, hidden]);
        yield return new(n.DownBias, [e, hidden]);
    }

    protected override AttentionLayer AttentionOf(DecoderGraph g, int layer) => base.AttentionOf(g, layer) with { Sinks = g.Weight(Sinks(layer)) };

    protected override Value FeedForward(DecoderGraph g, int layer, Value x)
    {
        var b = g.B;
        var c = g.Config;
        var n = Experts(layer);
        var tokens = b.Op("Reshape", [x, b.Int64s(-1, c.HiddenSize)]);                                      // [N, hidden]
        Value routerLogits;
        using (b.Scope("router")) routerLogits = b.Op("Add", [b.Op("MatMul", [tokens, g.LinearWeight(n.Router)]), g.Weight(n.RouterBias)]); // [N, experts]
        g.RouterLogits.Add(routerLogits);
        // The fused op's softmax over every logit, top-k and renormalisation equal a softmax over the top-k logits.
        var fused = new StackedSwigluExperts(
            n.GateUp + ".fc1", () => TransposeLastTwo(g.Weights.Get(n.GateUp)),                                // [experts, 2*inter, hidden]
            () => g.Weight(n.GateUpBias),
            n.Down + ".fc2", () => TransposeLastTwo(g.Weights.Get(n.Down)),                                    // [experts, hidden, inter]
            () => g.Weight(n.DownBias),
            SwigluAlpha, Beta: 1, SwigluLimit, Normalize: true);
        var combined = g.Lowering.FusedMoe(g, tokens, routerLogits, fused) ?? Spelled(g, tokens, routerLogits, n);
        return b.Op("Reshape", [combined, b.Op("Shape", [x])]);
    }

    //   router logits ─ TopK ─ Softmax over the k ─ per-expert weights w_e [N, 1] (0 where not chosen)
    //   tokens ─ expert e: x W_gu[e] + b_gu[e] ─ even / odd columns ─ clamped SwiGLU ─ W_d[e] + b_d[e] ─ Where(chosen, w_e y_e, 0), summed
    private static Value Spelled(DecoderGraph g, Value tokens, Value routerLogits, ExpertNames n)
    {
        var c = g.Config;
        var b = g.B;
        Value weights, selected;
        using (b.Scope("routing"))
        {
            var top = b.Node(GraphBuilder.DefaultDomain, "TopK", [routerLogits, b.Int64s(c.ExpertsPerToken)], 2, Attr.Int("axis", -1)); // [N, k] x2
            var topWeights = b.Op("Softmax", [top[0]], Attr.Int("axis", -1));                                                            // [N, k]
            (weights, selected) = Moe.ScatterRouting(g, topWeights, top[1], c.NumExperts);
        }
        Value? sum = null;
        for (int e = 0; e < c.NumExperts; e++)
        {
            using var scope = b.Scope($"experts.{e}");
            var index = b.Int64Scalar(e);
            Value Slice(string name) => b.Op("Gather", [g.Weight(name), index], Attr.Int("axis", 0));
            var gateUp = b.Op("Add", [b.Op("MatMul", [tokens, Slice(n.GateUp)]), Slice(n.GateUpBias)]);                          // [N, 2*inter]
            var gate = b.Op("Slice", [gateUp, b.Int64s(0), b.Int64s(long.MaxValue), b.Int64s(-1), b.Int64s(2)]);                  // [N, inter]
            var up = b.Op("Slice", [gateUp, b.Int64s(1), b.Int64s(long.MaxValue), b.Int64s(-1), b.Int64s(2)]);
            gate = b.Op("Min", [gate, g.Scalar(SwigluLimit)]);
            up = b.Op("Clip", [up, g.Scalar(-SwigluLimit), g.Scalar(SwigluLimit)]);
            var glu = b.Op("Mul", [gate, b.Op("Sigmoid", [b.Op("Mul", [gate, g.Scalar(SwigluAlpha)])])]);
            var hidden = b.Op("Mul", [b.Op("Add", [up, g.Scalar(1)]), glu]);                                                       // [N, inter]
            var y = b.Op("Add", [b.Op("MatMul", [hidden, Slice(n.Down)]), Slice(n.DownBias)]);                                    // [N, hidden]
            var column = b.Int64s(e);
            var weight = b.Op("Gather", [weights, column], Attr.Int("axis", 1));                                                   // [N, 1]
            var chosen = b.Op("Gather", [selected, column], Attr.Int("axis", 1));
            var contribution = b.Op("Where", [chosen, b.Op("Mul", [y, weight]), g.Scalar(0)]);                                    // [N, hidden]
            sum = sum is null ? contribution : b.Op("Add", [sum, contribution]);
        }
        return sum!;
    }

    /// <summary>[E, R, C] written as [E, C, R]: the stacked [in, out] experts in the fused op's [out, in] layout,
    /// one expert at a time (a real checkpoint's stacked experts exceed what one array holds).</summary>
    private static ITensorSource TransposeLastTwo(ITensorSource source)
    {
        if (source.Shape.Count != 3) throw new ArgumentException($"expected a stacked [experts, rows, cols] tensor, got [{string.Join(", ", source.Shape)}]");
        long rows = source.Shape[1], cols = source.Shape[2];
        int size = source.ElementType.SizeOf();
        return TensorData.Lazy(source.ElementType, [source.Shape[0], cols, rows], stream =>
        {
            using var perExpert = new PerExpertTranspose(stream, checked((int)(rows * cols * size)), rows, cols, size);
            source.WriteTo(perExpert);
        });
    }

    /// <summary>A write-only stream that collects one expert's [rows, cols] bytes and writes them transposed.</summary>
    private sealed class PerExpertTranspose(Stream destination, int expertBytes, long rows, long cols, int size) : WriteOnlyStream
    {
        private readonly byte[] _input = new byte[expertBytes], _output = new byte[expertBytes];
        private int _filled;

        public override void Write(byte[] buffer, int offset, int count)
        {
            while (count > 0)
            {
                int take = Math.Min(count, _input.Length - _filled);
                Buffer.BlockCopy(buffer, offset, _input, _filled, take);
                (_filled, offset, count) = (_filled + take, offset + take, count - take);
                if (_filled < _input.Length) continue;
                for (long r = 0; r < rows; r++)
                    for (long c = 0; c < cols; c++)
                        Buffer.BlockCopy(_input, (int)((r * cols + c) * size), _output, (int)((c * rows + r) * size), size);
                destination.Write(_output);
                _filled = 0;
            }
        }

    }
}
