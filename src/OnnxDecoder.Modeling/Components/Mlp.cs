using OnnxDecoder.Onnx;

namespace OnnxDecoder.Modeling.Components;

/// <summary>The weights of one feed-forward block by checkpoint name: PyTorch Linear [out, in], or
/// GPT-2 Conv1D [in, out] when <paramref name="StoredInOut"/>; biases optional.</summary>
public sealed record MlpWeights(string? Gate, string Up, string Down, string? UpBias = null, string? DownBias = null, bool StoredInOut = false, string? GateBias = null);

/// <summary>Feed-forward blocks: SwiGLU (down(act(gate x) * up x)) and the plain MLP (proj(act(fc x))).</summary>
public static class Mlp
{
    /// <summary>x [B, S, hidden] (or [N, hidden]) -> same shape.</summary>
    public static Value Apply(DecoderGraph g, Value x, MlpWeights w)
    {
        var b = g.B;
        Value hidden;
        if (w.Gate is not null)
        {
            Value gate, up;
            if (g.FusesProjections && !w.StoredInOut && (w.GateBias is null) == (w.UpBias is null))
                (gate, up) = GateUp(g, x, w);
            else
            {
                using (b.Scope("gate_proj")) gate = g.Project(x, w.Gate, w.StoredInOut);        // [.., intermediate]
                using (b.Scope("up_proj")) up = g.Project(x, w.Up, w.StoredInOut);
                if (w.GateBias is not null) gate = b.Op("Add", [gate, g.Weight(w.GateBias)]);
                if (w.UpBias is not null) up = b.Op("Add", [up, g.Weight(w.UpBias)]);
            }
            using (b.Scope("act_fn")) hidden = b.Op("Mul", [Activate(g, gate), up]);
        }
        else
        {
            using (b.Scope("fc")) hidden = g.Project(x, w.Up, w.StoredInOut);
            if (w.UpBias is not null) hidden = b.Op("Add", [hidden, g.Weight(w.UpBias)]);
            using (b.Scope("act_fn")) hidden = Activate(g, hidden);
        }
        using (b.Scope("down_proj"))
        {
            var y = g.Project(hidden, w.Down, w.StoredInOut);                                   // [.., hidden]
            return w.DownBias is null ? y : b.Op("Add", [y, g.Weight(w.DownBias)]);
        }
    }

    //   x ─gate_up_proj─ [.., 2I] (+ bias) ─Split─ gate, up [.., I]: one matmul over the gate and up rows.
    private static (Value Gate, Value Up) GateUp(DecoderGraph g, Value x, MlpWeights w)
    {
        using var scope = g.B.Scope("gate_up_proj");
        string[] parts = [w.Gate!, w.Up];
        string name = FusedProjections.Name(w.Gate!, "gate_proj", "gate_up_proj", parts);
        var y = FusedProjections.Project(g, x, name, parts);
        if (w.GateBias is not null) y = g.B.Op("Add", [y, FusedProjections.Bias(g, FusedProjections.Name(w.GateBias, "gate_proj", "gate_up_proj", [w.GateBias, w.UpBias!]), [w.GateBias, w.UpBias!])]);
        long width = g.Weights.Get(w.Gate!).Shape[0];
        var halves = FusedProjections.Split(g, y, width, width);
        return (halves[0], halves[1]);
    }

    /// <summary>silu(x) = x sigmoid(x); gelu(x) = x/2 (1 + erf(x/sqrt 2));
    /// gelu_tanh(x) = x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). Standard ops, opset 17.</summary>
    public static Value Activate(DecoderGraph g, Value x)
    {
        var b = g.B;
        switch (g.Config.HiddenAct)
        {
            case Activation.Silu:
                return b.Op("Mul", [x, b.Op("Sigmoid", [x])]);
            case Activation.Gelu:
            {
                var erf = b.Op("Erf", [b.Op("Mul", [x, g.Scalar((float)(1 / Math.Sqrt(2)))])]);
                return b.Op("Mul", [b.Op("Mul", [x, g.Scalar(0.5f)]), b.Op("Add", [erf, g.Scalar(1)])]);
            }
            default:
            {
                var cube = b.Op("Mul", [b.Op("Mul", [x, x]), x]);
                var inner = b.Op("Mul", [b.Op("Add", [x, b.Op("Mul", [cube, g.Scalar(0.044715f)])]), g.Scalar((float)Math.Sqrt(2 / Math.PI))]);
                return b.Op("Mul", [b.Op("Mul", [x, g.Scalar(0.5f)]), b.Op("Add", [b.Op("Tanh", [inner]), g.Scalar(1)])]);
            }
        }
    }
}
