using System.CommandLine;
using Microsoft.ML.OnnxRuntime;
using OnnxDecoder.Onnx;
using OnnxDecoder.Runtime;

namespace OnnxDecoder.Cli;

/// <summary>
/// `onnx-decoder compare`: how far one export's predictions are from another's (a quantized or
/// float16 export against its fp32 original) under teacher forcing: top-1 agreement, the largest
/// logit difference, and the mean KL divergence KL(reference || model) of the next-token
/// distributions (softmax of the logits, natural log) over the same token sequence, in one prefill
/// run each. Every position counts, BOS's included: position t predicts token t+1.
/// </summary>
public static class Compare
{
    public static Command Create()
    {
        var reference = new Option<string>("--reference") { Description = "model folder whose predictions count as right (usually the fp32 export)", Required = true };
        var model = new Option<string>("--model") { Description = "model folder to compare with it", Required = true };
        var positions = new Option<int>("--positions") { Description = "teacher-forced positions (tokens after BOS)", DefaultValueFactory = _ => 256 };
        var seed = new Option<int>("--seed") { Description = "seed of the random token sequence", DefaultValueFactory = _ => 7 };
        var text = new Option<string?>("--text") { Description = "a text file to use instead of random tokens (encoded with the reference's tokenizer)" };
        var format = new Option<string>("--format") { Description = "text or json", DefaultValueFactory = _ => "text" };
        var command = new Command("compare", "Teacher-forced top-1 agreement, logit difference and KL divergence between two exports of one model")
        {
            reference, model, positions, seed, text, format,
        };
        command.SetAction(r => Commands.Guard(() =>
        {
            var folder = ModelFolder.Open(r.GetValue(reference)!);
            long[] ids;
            if (r.GetValue(text) is { } path)
            {
                var tokenizer = Runtime.Tokenization.TextTokenizer.Load(folder.Directory, folder.BosTokenId);
                ids = [.. tokenizer.Encode(File.ReadAllText(path), addBos: true).Take(r.GetValue(positions) + 1).Select(i => (long)i)];
            }
            else
            {
                var random = new Random(r.GetValue(seed));
                ids = [folder.BosTokenId, .. Enumerable.Range(0, r.GetValue(positions)).Select(_ => (long)random.Next(3, folder.VocabSize))];
            }
            if (r.GetValue(format) is not ("text" or "json")) throw new ArgumentException($"--format must be text or json, not '{r.GetValue(format)}'");
            var result = Measure(folder.Directory, r.GetValue(model)!, ids);
            string modelPath = Path.GetFullPath(r.GetValue(model)!);
            if (r.GetValue(format) == "json")
                Console.WriteLine(new System.Text.Json.Nodes.JsonObject
                {
                    ["reference"] = folder.Directory, ["model"] = modelPath, ["positions"] = result.Positions, ["top1_agreeing"] = result.Agreeing,
                    ["top1_agreement"] = result.Fraction, ["largest_logit_difference"] = result.LargestDifference,
                    ["mean_kl_divergence"] = result.MeanKlDivergence, ["largest_kl_divergence"] = result.LargestKlDivergence,
                }.ToJsonString());
            else
                Console.WriteLine($"{modelPath} vs {folder.Directory}: top-1 agreement {result.Agreeing}/{result.Positions} = {100.0 * result.Agreeing / result.Positions:F1}%, " +
                    $"largest logit difference {result.LargestDifference:G4}, mean KL divergence {result.MeanKlDivergence:G4} nats (largest {result.LargestKlDivergence:G4})");
            return 0;
        }));
        return command;
    }

    /// <param name="MeanKlDivergence">Mean over positions of KL(reference || model), in nats.</param>
    public sealed record Agreement(int Agreeing, int Positions, float LargestDifference, double MeanKlDivergence, double LargestKlDivergence)
    {
        public double Fraction => (double)Agreeing / Positions;
    }

    /// <summary>Teacher-forces <paramref name="ids"/> (BOS first) through both exports and compares
    /// their predictions at every position.</summary>
    public static Agreement Measure(string referenceFolder, string modelFolder, long[] ids)
    {
        var folder = ModelFolder.Open(referenceFolder);
        var other = ModelFolder.Open(modelFolder);
        if (other.VocabSize != folder.VocabSize) throw new ArgumentException($"the models' vocabularies differ ({folder.VocabSize} vs {other.VocabSize}): compare exports of one model");
        if (ids.Length < 2 || ids.Length > Math.Min(folder.ContextLength, other.ContextLength))
            throw new ArgumentException($"--positions must leave 2..{Math.Min(folder.ContextLength, other.ContextLength)} tokens in the context, got {ids.Length}");
        var a = TeacherForcedLogits(folder, ids);
        var b = TeacherForcedLogits(other, ids);
        int vocab = folder.VocabSize, agree = 0;
        float largest = 0;
        double klSum = 0, klLargest = 0;
        for (int t = 0; t < ids.Length; t++)
        {
            var x = a.AsSpan(t * vocab, vocab);
            var y = b.AsSpan(t * vocab, vocab);
            if (Runtime.Sampling.Sampler.ArgMax(x) == Runtime.Sampling.Sampler.ArgMax(y)) agree++;
            for (int v = 0; v < vocab; v++) largest = Math.Max(largest, Math.Abs(x[v] - y[v]));
            double kl = KlDivergence(x, y);
            klSum += kl;
            klLargest = Math.Max(klLargest, kl);
        }
        return new Agreement(agree, ids.Length, largest, klSum / ids.Length, klLargest);
    }

    /// <summary>KL(P || Q) in nats of the softmax distributions of two logit rows.</summary>
    public static double KlDivergence(ReadOnlySpan<float> referenceLogits, ReadOnlySpan<float> modelLogits) =>
        Runtime.Sampling.LogitDivergence.Kl(referenceLogits, modelLogits);

    /// <summary>Logits at every position of one teacher-forced run: [positions, vocab] float32.</summary>
    private static float[] TeacherForcedLogits(ModelFolder folder, long[] ids)
    {
        // The graph as exported (the file this compares), not the runtime's form with host-fed lengths and our CPU matmul kernels.
        using var model = new DecoderModel(folder.Directory, new ExecutionProviderOptions { DirectGqaLengths = false, NativeKernels = false });
        if (!model.FullLogits) throw new ArgumentException($"{folder.ModelPath} returns logits for the last position only: compare needs an export with logits for every position");
        var names = new List<string> { GraphContract.InputIds, GraphContract.AttentionMask, GraphContract.PositionIds };
        var values = new List<OrtValue>
        {
            OrtValue.CreateTensorValueFromMemory(ids, [1, ids.Length]),
            OrtValue.CreateTensorValueFromMemory(Enumerable.Repeat(1L, ids.Length).ToArray(), [1, ids.Length]),
            OrtValue.CreateTensorValueFromMemory(Enumerable.Range(0, ids.Length).Select(i => (long)i).ToArray(), [1, ids.Length]),
        };
        try
        {
            var kvType = model.KvElementType;
            for (int layer = 0; layer < folder.NumLayers; layer++)
                foreach (var name in new[] { folder.PastKeyName(layer), folder.PastValueName(layer) })
                {
                    names.Add(name);
                    values.Add(OrtValue.CreateTensorValueWithData(OrtMemoryInfo.DefaultInstance, kvType, [1, folder.NumKvHeads, 0, folder.HeadSize], 0, 0));
                }
            using var runOptions = new RunOptions();
            using var outputs = model.Session.Run(runOptions, names, values, [GraphContract.Logits]);
            return model.LogitsElementType == Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Float16
                ? [.. outputs[0].GetTensorDataAsSpan<Float16>().ToArray().Select(h => (float)h)]
                : outputs[0].GetTensorDataAsSpan<float>().ToArray();
        }
        finally
        {
            foreach (var value in values) value.Dispose();
        }
    }
}
