using System.Diagnostics;
using LLama;
using LLama.Common;
using LLama.Native;
using OnnxDecoder.Runtime;
using OnnxDecoder.Runtime.Sampling;
using OrtGenAI = Microsoft.ML.OnnxRuntimeGenAI;

namespace OnnxDecoder.Bench;

/// <summary>One greedy run: prompt prefill time and the time of the decode steps after it.</summary>
public readonly record struct RunTimes(int PromptTokens, double PrefillSeconds, int DecodeSteps, double DecodeSeconds)
{
    public double PrefillRate => PromptTokens / PrefillSeconds;
    public double DecodeRate => DecodeSteps / DecodeSeconds;
}

/// <summary>
/// A runtime under test. Every peer decodes greedily from the same token ids and never stops early:
/// an end token is replaced by the next id (ours, llama.cpp) or forbidden by min_length (genai), so
/// each run decodes exactly genTokens tokens; the first comes from the prefill, the rest are timed steps.
/// </summary>
public interface IPeer : IDisposable
{
    string Name { get; }

    RunTimes Run(int[] prompt, int genTokens);

    /// <summary>Logits [tokens.Length - 1][vocab]: row i predicts tokens[i + 1] from tokens[0..i]. Null where the peer cannot say.</summary>
    float[][]? TeacherForcedLogits(int[] tokens);
}

/// <summary>Our runtime: a DecoderSession, batch 1, with the runtime's defaults (our fused ops on the CPU);
/// <paramref name="nativeMatMul"/> as ExecutionProviderOptions.NativeMatMul (our MatMulNBits kernel where it qualifies).</summary>
public sealed class OursPeer : IPeer
{
    private readonly DecoderSession _session;
    private readonly HashSet<int> _eos;
    private readonly int _vocab;

    public OursPeer(string name, string folder, int maxLength, int threads, IReadOnlyDictionary<string, string>? sessionConfig = null, bool nativeMatMul = false)
    {
        Name = name;
        _session = new DecoderSession(folder, new DecoderSessionOptions
        {
            MaxLength = maxLength,
            Providers = new ExecutionProviderOptions { IntraOpThreads = threads, SessionConfigEntries = sessionConfig, NativeMatMul = nativeMatMul },
        });
        _eos = [.. _session.Folder.EosTokenIds];
        _vocab = _session.VocabSize;
    }

    public string Name { get; }
    public DecoderSession Session => _session;

    /// <summary>What ran MatMulNBits: our kernels (how many nodes, which ISA) or ONNX Runtime's.</summary>
    public NativeKernelsUse NativeKernels => _session.Model.NativeKernels;

    public RunTimes Run(int[] prompt, int genTokens)
    {
        _session.Reset();
        var ids = prompt.Select(i => (long)i).ToArray();
        long start = Stopwatch.GetTimestamp();
        var logits = _session.Append(ids, ids.Length);
        double prefill = Stopwatch.GetElapsedTime(start).TotalSeconds;
        var step = new long[1];
        start = Stopwatch.GetTimestamp();
        for (int i = 1; i < genTokens; i++)
        {
            int next = Sampler.ArgMax(logits);
            if (_eos.Contains(next)) next = (next + 1) % _vocab;
            step[0] = next;
            logits = _session.Step(step);
        }
        return new RunTimes(prompt.Length, prefill, genTokens - 1, Stopwatch.GetElapsedTime(start).TotalSeconds);
    }

    public float[][] TeacherForcedLogits(int[] tokens)
    {
        _session.Reset();
        var rows = new float[tokens.Length - 1][];
        rows[0] = _session.Append([tokens[0]], 1).ToArray();
        var step = new long[1];
        for (int i = 1; i < tokens.Length - 1; i++)
        {
            step[0] = tokens[i];
            rows[i] = _session.Step(step).ToArray();
        }
        return rows;
    }

    /// <summary>Greedy continuation of <paramref name="prompt"/> (end tokens replaced as in <see cref="Run"/>).</summary>
    public int[] Greedy(int[] prompt, int genTokens)
    {
        _session.Reset();
        var ids = prompt.Select(i => (long)i).ToArray();
        var logits = _session.Append(ids, ids.Length);
        var output = new List<int>(prompt);
        var step = new long[1];
        for (int i = 0; i < genTokens; i++)
        {
            int next = Sampler.ArgMax(logits);
            if (_eos.Contains(next)) next = (next + 1) % _vocab;
            output.Add(next);
            if (i == genTokens - 1) break;
            step[0] = next;
            logits = _session.Step(step);
        }
        return [.. output];
    }

    public void Dispose() => _session.Dispose();
}

/// <summary>onnxruntime-genai on the same export, its intra-op threads set to ours through a config overlay.</summary>
public sealed class GenAiPeer : IPeer
{
    private readonly OrtGenAI.Config _config;
    private readonly OrtGenAI.Model _model;
    private readonly int _maxLength;

    public GenAiPeer(string name, string folder, int maxLength, int threads)
    {
        Name = name;
        _maxLength = maxLength;
        _config = new OrtGenAI.Config(folder);
        _config.Overlay("{\"model\": {\"decoder\": {\"session_options\": {\"intra_op_num_threads\": " + threads + "}}}}");
        _model = new OrtGenAI.Model(_config);
    }

    public string Name { get; }

    public RunTimes Run(int[] prompt, int genTokens)
    {
        int maxLength = prompt.Length + genTokens;
        if (maxLength > _maxLength) throw new ArgumentException($"{prompt.Length} + {genTokens} tokens exceed the export's {_maxLength}");
        using var parameters = new OrtGenAI.GeneratorParams(_model);
        parameters.SetSearchOption("max_length", maxLength);
        parameters.SetSearchOption("min_length", maxLength);
        parameters.SetSearchOption("do_sample", false);
        using var generator = new OrtGenAI.Generator(_model, parameters);
        long start = Stopwatch.GetTimestamp();
        generator.AppendTokens(prompt); // runs the prefill
        double prefill = Stopwatch.GetElapsedTime(start).TotalSeconds;
        // The first token comes from the prefill's logits (GenerateNextToken runs the model only for the
        // token before it, lazily): each later call is one decode step, as ours and llama.cpp's are.
        generator.GenerateNextToken();
        start = Stopwatch.GetTimestamp();
        int steps = 0;
        while (!generator.IsDone())
        {
            generator.GenerateNextToken();
            steps++;
        }
        return new RunTimes(prompt.Length, prefill, steps, Stopwatch.GetElapsedTime(start).TotalSeconds);
    }

    public float[][]? TeacherForcedLogits(int[] tokens) => null;

    public void Dispose()
    {
        _model.Dispose();
        _config.Dispose();
    }
}

/// <summary>llama.cpp through LLamaSharp on a GGUF file: one context, batch 1, token ids fed directly.</summary>
public sealed class LlamaCppPeer : IPeer
{
    private readonly LLamaWeights _weights;
    private readonly LLamaContext _context;
    private readonly LLamaBatch _batch = new();
    private readonly int _vocab;
    private readonly HashSet<int> _eos;

    public LlamaCppPeer(string name, string ggufPath, int contextLength, int batchTokens, int threads, IEnumerable<int> eosTokenIds)
    {
        Name = name;
        var parameters = new ModelParams(ggufPath)
        {
            ContextSize = (uint)contextLength,
            BatchSize = (uint)batchTokens,
            UBatchSize = (uint)batchTokens,
            Threads = threads,
            BatchThreads = threads,
            GpuLayerCount = 0,
        };
        _weights = LLamaWeights.LoadFromFile(parameters);
        _context = _weights.CreateContext(parameters);
        _vocab = _weights.Vocab.Count;
        _eos = [.. eosTokenIds];
    }

    public string Name { get; }

    private void Decode()
    {
        var result = _context.Decode(_batch);
        if (result != DecodeResult.Ok) throw new InvalidOperationException($"llama.cpp decode failed: {result}");
    }

    private int ArgMax(int index)
    {
        var logits = _context.NativeHandle.GetLogitsIth(index);
        int best = 0;
        for (int i = 1; i < logits.Length; i++) if (logits[i] > logits[best]) best = i;
        return best;
    }

    public RunTimes Run(int[] prompt, int genTokens)
    {
        _context.NativeHandle.MemoryClear(true);
        _batch.Clear();
        for (int i = 0; i < prompt.Length; i++) _batch.Add(prompt[i], i, LLamaSeqId.Zero, i == prompt.Length - 1);
        long start = Stopwatch.GetTimestamp();
        Decode();
        double prefill = Stopwatch.GetElapsedTime(start).TotalSeconds;
        int position = prompt.Length;
        start = Stopwatch.GetTimestamp();
        for (int i = 1; i < genTokens; i++)
        {
            int next = ArgMax(_batch.TokenCount - 1);
            if (_eos.Contains(next)) next = (next + 1) % _vocab;
            _batch.Clear();
            _batch.Add(next, position++, LLamaSeqId.Zero, true);
            Decode();
        }
        return new RunTimes(prompt.Length, prefill, genTokens - 1, Stopwatch.GetElapsedTime(start).TotalSeconds);
    }

    public float[][] TeacherForcedLogits(int[] tokens)
    {
        _context.NativeHandle.MemoryClear(true);
        _batch.Clear();
        for (int i = 0; i < tokens.Length - 1; i++) _batch.Add(tokens[i], i, LLamaSeqId.Zero, true);
        Decode();
        var rows = new float[tokens.Length - 1][];
        for (int i = 0; i < rows.Length; i++) rows[i] = _context.NativeHandle.GetLogitsIth(i).ToArray();
        return rows;
    }

    public void Dispose()
    {
        _context.Dispose();
        _weights.Dispose();
    }
}

/// <summary>Mean KL divergence KL(P || Q) over positions, P and Q the softmax of two logit rows (computed in double).</summary>
public static class Divergence
{
    public static double MeanKl(float[][] reference, float[][] candidate)
    {
        if (reference.Length != candidate.Length) throw new ArgumentException($"{reference.Length} reference rows against {candidate.Length}");
        double total = 0;
        for (int r = 0; r < reference.Length; r++) total += Kl(reference[r], candidate[r]);
        return total / reference.Length;
    }

    public static double Kl(ReadOnlySpan<float> p, ReadOnlySpan<float> q) => OnnxDecoder.Runtime.Sampling.LogitDivergence.Kl(p, q);
}
