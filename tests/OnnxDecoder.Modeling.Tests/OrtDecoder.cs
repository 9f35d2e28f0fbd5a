using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using OnnxDecoder.Modeling;
using OnnxDecoder.Modeling.Families;

namespace OnnxDecoder.Modeling.Tests;

/// <summary>Runs one of our decoder graphs in ONNX Runtime with plain Run calls (the tests' view).</summary>
public sealed class OrtDecoder : IDisposable
{
    private readonly InferenceSession _session;
    private readonly DecoderConfig _config;
    private readonly bool _half; // float16 KV cache and logits: converted at the boundary

    public OrtDecoder(DecoderConfig config, IWeightSource weights, ExportOptions options, GraphOptimizationLevel optimization = GraphOptimizationLevel.ORT_ENABLE_ALL)
    {
        _config = config;
        var model = FamilyRegistry.For(config).Build(config, weights, options);
        using var sessionOptions = new SessionOptions { LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR, GraphOptimizationLevel = optimization };
        _session = new InferenceSession(model.ToModelProto().ToByteArray(), sessionOptions);
        _half = _session.OutputMetadata["logits"].ElementDataType == Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Float16;
    }

    private OrtValue FloatTensor(float[] values, long[] shape) => _half
        ? OrtValue.CreateTensorValueFromMemory(values.Select(v => (Float16)v).ToArray(), shape)
        : OrtValue.CreateTensorValueFromMemory(values, shape);

    private float[] Floats(OrtValue value) => _half
        ? value.GetTensorDataAsSpan<Float16>().ToArray().Select(h => (float)h).ToArray()
        : value.GetTensorDataAsSpan<float>().ToArray();

    public sealed record Result(float[] Logits, float[][] PresentKeys, float[][] PresentValues, Dictionary<string, float[]> Extra);

    /// <summary>ids and positions [B, S]; mask [B, P + S]; past key/value per layer [B, kv, P, d] flat.</summary>
    public Result Run(long[,] ids, long[,] mask, long[,] positions, float[][]? pastKeys = null, float[][]? pastValues = null, params string[] extraOutputs)
    {
        int batch = ids.GetLength(0), length = ids.GetLength(1), total = mask.GetLength(1), past = total - length;
        var values = new List<OrtValue>();
        try
        {
            var names = new List<string> { "input_ids", "attention_mask", "position_ids" };
            values.Add(OrtValue.CreateTensorValueFromMemory(Flatten(ids), [batch, length]));
            values.Add(OrtValue.CreateTensorValueFromMemory(Flatten(mask), [batch, total]));
            values.Add(OrtValue.CreateTensorValueFromMemory(Flatten(positions), [batch, length]));
            long[] pastShape = [batch, _config.NumKvHeads, past, _config.HeadDim];
            for (int i = 0; i < _config.NumLayers; i++)
            {
                names.Add($"past_key_values.{i}.key");
                values.Add(FloatTensor(pastKeys?[i] ?? [], pastShape));
                names.Add($"past_key_values.{i}.value");
                values.Add(FloatTensor(pastValues?[i] ?? [], pastShape));
            }
            var outputNames = new List<string> { "logits" };
            for (int i = 0; i < _config.NumLayers; i++) { outputNames.Add($"present.{i}.key"); outputNames.Add($"present.{i}.value"); }
            outputNames.AddRange(extraOutputs);
            using var runOptions = new RunOptions();
            using var outputs = _session.Run(runOptions, names, values, outputNames);
            var keys = new float[_config.NumLayers][];
            var vals = new float[_config.NumLayers][];
            for (int i = 0; i < _config.NumLayers; i++)
            {
                keys[i] = Floats(outputs[1 + 2 * i]);
                vals[i] = Floats(outputs[2 + 2 * i]);
            }
            var extra = new Dictionary<string, float[]>();
            for (int e = 0; e < extraOutputs.Length; e++) extra[extraOutputs[e]] = Floats(outputs[1 + 2 * _config.NumLayers + e]);
            return new Result(Floats(outputs[0]), keys, vals, extra);
        }
        finally
        {
            foreach (var v in values) v.Dispose();
        }
    }

    private static T[] Flatten<T>(T[,] array) => array.Cast<T>().ToArray();

    public void Dispose() => _session.Dispose();
}

/// <summary>Small inputs for the tests.</summary>
public static class Inputs
{
    public static long[,] Tokens(int batch, int length, int vocab, int seed)
    {
        var random = new Random(seed);
        var ids = new long[batch, length];
        for (int b = 0; b < batch; b++) for (int t = 0; t < length; t++) ids[b, t] = random.Next(vocab);
        return ids;
    }

    public static long[,] Ones(int batch, int length)
    {
        var a = new long[batch, length];
        for (int b = 0; b < batch; b++) for (int t = 0; t < length; t++) a[b, t] = 1;
        return a;
    }

    public static long[,] Positions(int batch, int start, int length)
    {
        var a = new long[batch, length];
        for (int b = 0; b < batch; b++) for (int t = 0; t < length; t++) a[b, t] = start + t;
        return a;
    }

    public static float MaxAbsDifference(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        if (a.Length != b.Length) throw new ArgumentException($"lengths differ: {a.Length} vs {b.Length}");
        float max = 0;
        for (int i = 0; i < a.Length; i++)
        {
            float d = Math.Abs(a[i] - b[i]);
            if (float.IsNaN(d)) return float.NaN;
            max = Math.Max(max, d);
        }
        return max;
    }
}
