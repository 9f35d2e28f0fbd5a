using System.Text.Json.Nodes;
using OnnxDecoder.Exporters;
using OnnxDecoder.Exporters.Synth;
using OnnxDecoder.Modeling;
using OnnxDecoder.Modeling.Tests.Reference;
using OnnxDecoder.Onnx;
using Google.Protobuf;
using OnnxDecoder.Onnx.Proto;
using OnnxDecoder.Runtime.Sampling.Constraints;
using OnnxDecoder.Runtime.Tokenization;
using OnnxDecoder.Tests.Shared;

namespace OnnxDecoder.Runtime.Tests;

/// <summary>
/// LongRoPE generations that pass original_max_position_embeddings (16 here, of 64 positions): every step's logits
/// equal the Hugging Face reference run without a cache over the whole sequence so far, its factors chosen by that
/// sequence's length as transformers chooses them (short up to 16 positions, long past them). transformers' Phi-3
/// re-runs the sequence once at the crossing; so must the Generator, the batcher's rows and a chunked prefill.
/// </summary>
[Parallelizable(ParallelScope.None)]
public class LongRopeCrossingTests
{
    private const int Original = 16, MaxPositions = 64, NewTokens = 30;
    private const float Tolerance = 1e-4f;
    private string _root = "", _configJson = "";
    private readonly InMemoryWeights _weights = new();
    private readonly Dictionary<(Lowering, bool), string> _folders = new();

    [OneTimeSetUp]
    public void OneTimeSetUp()
    {
        _root = TestPaths.NewTempFolder("longrope");
        string checkpoint = Path.Combine(_root, "phi3-longrope");
        SynthPresets.Write("phi3-tiny", seed: 21, checkpoint);
        // phi3-tiny's shapes, full rotary (head_dim 16, 8 factors: GroupQueryAttention rotates in the ort lowering),
        // a switch at 16 positions of 64, and no sliding window.
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(checkpoint, "config.json")))!.AsObject();
        config["partial_rotary_factor"] = 1.0;
        config["max_position_embeddings"] = MaxPositions;
        config["original_max_position_embeddings"] = Original;
        config["sliding_window"] = null;
        config["rope_scaling"] = new JsonObject
        {
            ["type"] = "longrope",
            ["short_factor"] = new JsonArray(1.0, 1.0, 1.1, 1.2, 1.4, 1.7, 2.0, 2.5),
            ["long_factor"] = new JsonArray(1.0, 1.5, 2.5, 4.0, 6.0, 8.0, 11.0, 16.0),
        };
        _configJson = config.ToJsonString();
        File.WriteAllText(Path.Combine(checkpoint, "config.json"), _configJson);
        using var opened = Checkpoint.Open(checkpoint);
        foreach (var name in opened.Weights.Names)
        {
            var source = opened.Weights.Get(name);
            _weights.Add(name, TensorTransforms.ReadFloats(source), [.. source.Shape]);
        }
    }

    [OneTimeTearDown] public void OneTimeTearDown() => Directory.Delete(_root, recursive: true);

    /// <summary>The export; <paramref name="withoutSwitch"/>: its graph with the switch's metadata entry removed (as exports before it).</summary>
    private string Export(Lowering lowering, bool withoutSwitch = false)
    {
        if (_folders.TryGetValue((lowering, withoutSwitch), out var folder)) return folder;
        folder = Path.Combine(_root, $"export-{lowering}{(withoutSwitch ? "-no-switch" : "")}");
        using (var opened = Checkpoint.Open(Path.Combine(_root, "phi3-longrope")))
            ModelFolderWriter.Write(folder, opened, new ExportOptions { Lowering = lowering });
        if (withoutSwitch)
        {
            string path = Path.Combine(folder, "model.onnx");
            var model = ModelProto.Parser.ParseFrom(File.ReadAllBytes(path));
            var entry = model.MetadataProps.Single(p => p.Key == GraphContract.Metadata.LongRopeSwitch);
            Assert.That(entry.Value, Is.EqualTo("16"), "the export writes original_max_position_embeddings");
            model.MetadataProps.Remove(entry);
            File.WriteAllBytes(path, model.ToByteArray());
        }
        return _folders[(lowering, withoutSwitch)] = folder;
    }

    /// <summary>The reference's next-token logits after <paramref name="tokens"/>, run whole from position 0 without a cache.</summary>
    private float[] Reference(IReadOnlyList<int> tokens)
    {
        int length = tokens.Count;
        long[,] ids = new long[1, length], mask = new long[1, length], positions = new long[1, length];
        for (int t = 0; t < length; t++) (ids[0, t], mask[0, t], positions[0, t]) = (tokens[t], 1, t);
        var logits = new HfReference(_configJson, _weights).ForwardFloat(ids, mask, positions);
        int vocab = logits.Length / length;
        return logits.AsSpan((length - 1) * vocab, vocab).ToArray();
    }

    private static int[] Prompt(int length, int seed)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, length).Select(_ => random.Next(500)).ToArray();
    }

    private static readonly GenerationOptions Greedy = new() { MaxNewTokens = NewTokens, EosTokenIds = [], Sampling = new() { Temperature = 0 } };

    /// <summary>The largest |ours - reference| over every step, and the steps it was measured at (sequence lengths).</summary>
    private float[] Differences(int[] prompt, IReadOnlyList<int> generated, IReadOnlyList<float[]> stepLogits)
    {
        Assert.That(stepLogits, Has.Count.EqualTo(generated.Count), "one logits row per generated token");
        var differences = new float[generated.Count];
        var sequence = new List<int>(prompt);
        for (int i = 0; i < generated.Count; i++)
        {
            var expected = Reference(sequence);
            differences[i] = expected.Zip(stepLogits[i], (a, b) => Math.Abs(a - b)).Max();
            sequence.Add(generated[i]);
        }
        return differences;
    }

    private static string Describe(int[] prompt, float[] differences) =>
        string.Join(", ", differences.Select((d, i) => $"{prompt.Length + i}:{d:G2}"));

    /// <summary>Greedy generation through <see cref="Generator"/>, with every step's logits as the session returned them.</summary>
    private static (int[] Tokens, List<float[]> Logits, DecoderSession Session) Generate(string folder, int[] prompt, int prefillChunk = 0,
        GenerationOptions? options = null)
    {
        var session = new DecoderSession(folder, new DecoderSessionOptions { PrefillChunk = prefillChunk });
        var logits = new List<float[]>();
        var generator = new Generator(session, null);
        var result = generator.Generate(prompt, options ?? Greedy, token => { if (token.TokenId >= 0) logits.Add(session.Logits.ToArray()); });
        return (result.TokenIds, logits, session);
    }

    [TestCase(Lowering.Ort, 0)]
    [TestCase(Lowering.Portable, 0)]
    [TestCase(Lowering.Ort, 4)]
    public void Generator_crossing_the_switch_reruns_the_sequence_once_and_every_step_matches_the_reference(Lowering lowering, int prefillChunk)
    {
        var prompt = Prompt(10, seed: 1);
        var (tokens, logits, session) = Generate(Export(lowering), prompt, prefillChunk);
        using var _ = session;
        Assert.That(session.Model.LongRopeSwitch, Is.EqualTo(Original));
        Assert.That(tokens, Has.Length.EqualTo(NewTokens));
        var differences = Differences(prompt, tokens, logits);
        TestContext.Out.WriteLine($"{lowering} chunk {prefillChunk}: max |ours - reference| per sequence length: {Describe(prompt, differences)}");
        Assert.That(differences.Max(), Is.LessThan(Tolerance), Describe(prompt, differences));
        Assert.That(session.LongRopeReruns, Is.EqualTo(1), "one run again, at the crossing");
        Assert.That(session.LongRopeRerunPositions, Is.EqualTo(Original), "the 16 cached positions ran again");
    }

    [TestCase(Lowering.Ort, 0)]
    [TestCase(Lowering.Portable, 0)]
    [TestCase(Lowering.Ort, 4)]
    public void A_prompt_longer_than_the_switch_needs_no_rerun_even_in_chunks(Lowering lowering, int prefillChunk)
    {
        var prompt = Prompt(20, seed: 2);
        var (tokens, logits, session) = Generate(Export(lowering), prompt, prefillChunk, Greedy with { MaxNewTokens = 10 });
        using var _ = session;
        var differences = Differences(prompt, tokens, logits);
        Assert.That(differences.Max(), Is.LessThan(Tolerance), Describe(prompt, differences));
        Assert.That(session.LongRopeReruns, Is.Zero);
    }

    [Test]
    public void A_folder_without_the_switch_entry_runs_as_before_short_factor_keys_kept_past_the_switch()
    {
        var prompt = Prompt(10, seed: 1);
        var (tokens, logits, session) = Generate(Export(Lowering.Ort, withoutSwitch: true), prompt);
        using var _ = session;
        Assert.That(session.Model.LongRopeSwitch, Is.Null);
        var differences = Differences(prompt, tokens, logits);
        int before = Original - prompt.Length + 1; // steps whose sequence is at most 16 tokens long
        Assert.That(differences.Take(before).Max(), Is.LessThan(Tolerance), "up to the switch: " + Describe(prompt, differences));
        Assert.That(differences.Skip(before).Max(), Is.GreaterThan(1e-3f), "past it the keys stay short-factor ones: " + Describe(prompt, differences));
        Assert.That(session.LongRopeReruns, Is.Zero);
    }

    /// <summary>Drafts k copies of the context's last token every round, so every round verifies k + 1 positions.</summary>
    private sealed class RepeatDrafter : OnnxDecoder.Runtime.Speculation.IDrafter
    {
        public string Name => "repeat";
        public bool HasDistributions => false;
        public void Begin(DecoderSession target, OnnxDecoder.Runtime.Sampling.SamplingOptions sampling) { }
        public int Draft(IReadOnlyList<int> context, Span<int> drafts, float[] distributions, CancellationToken cancellationToken)
        {
            drafts.Fill(context[^1]);
            return drafts.Length;
        }
        public void Keep(int length) { }
    }

    [Test]
    public void Speculative_generation_across_the_switch_keeps_the_greedy_tokens()
    {
        // Every round verifies 5 positions, so rounds from 12 cached positions on would score positions on both sides of
        // the switch in one run: verification stops short of it, and the crossing runs on a plain step.
        var prompt = Prompt(12, seed: 3);
        string folder = Export(Lowering.Ort);
        var (plain, plainLogits, plainSession) = Generate(folder, prompt);
        using var _ = plainSession;
        Assert.That(Differences(prompt, plain, plainLogits).Max(), Is.LessThan(Tolerance), "the plain greedy run matches the reference");
        var speculative = Greedy with
        {
            Speculation = new OnnxDecoder.Runtime.Speculation.SpeculationOptions { Drafter = new RepeatDrafter(), DraftTokens = 4, MissesBeforePause = 1000 },
        };
        using var session = new DecoderSession(folder);
        var result = new Generator(session, null).Generate(prompt, speculative);
        Assert.That(result.TokenIds, Is.EqualTo(plain), "greedy speculation equals greedy decoding");
        Assert.That(result.Speculation!.Rounds, Is.GreaterThan(5), "drafts were verified");
        Assert.That(session.LongRopeReruns, Is.EqualTo(1));
    }

    /// <summary>Keeps each step's logits as the sequence's sampler receives them, masking nothing.</summary>
    private sealed class LogitsRecorder : ILogitsConstraint
    {
        public List<List<float[]>> Sequences { get; } = [];

        public ISequenceConstraint Begin(TextTokenizer tokenizer, int vocabSize, IReadOnlyList<int> eosTokenIds)
        {
            var steps = new List<float[]>();
            lock (Sequences) Sequences.Add(steps);
            return new Recording(steps);
        }

        private sealed class Recording(List<float[]> steps) : ISequenceConstraint
        {
            public void Mask(Span<float> logits, int remainingTokens) => steps.Add(logits.ToArray());
            public void Advance(int tokenId) { }
            public bool IsComplete => true;
            public bool MustEnd => false;
            public int MinTokensToFinish => 0;
        }
    }

    /// <summary>A batcher over <paramref name="model"/>, which the caller disposes after it.</summary>
    private static ContinuousBatcher OpenBatcher(DecoderModel model, int sequences) =>
        new(model, TextTokenizer.Load(model.Folder.Directory, model.Folder.BosTokenId), new BatcherOptions { MaxSequences = sequences });

    /// <summary>Greedy generation through the batcher: the result, every step's logits, and the prompt tokens it reused.</summary>
    private static async Task<(GenerationResult Result, List<float[]> Logits, int CachedPromptTokens)> Submit(ContinuousBatcher batcher, int[] prompt,
        int newTokens = NewTokens)
    {
        var recorder = new LogitsRecorder();
        using var sequence = batcher.Submit(prompt, Greedy with { MaxNewTokens = newTokens, Constraint = recorder });
        var result = await sequence.Completion;
        return (result, recorder.Sequences.Single(), sequence.CachedPromptTokens);
    }

    [TestCase(Lowering.Ort)]
    [TestCase(Lowering.Portable)]
    public async Task Batcher_row_crossing_the_switch_matches_the_reference_at_every_step(Lowering lowering)
    {
        using var model = new DecoderModel(Export(lowering));
        using var batcher = OpenBatcher(model, sequences: 1);
        var prompt = Prompt(10, seed: 1);
        var (result, logits, _) = await Submit(batcher, prompt);
        var differences = Differences(prompt, result.TokenIds, logits);
        Assert.That(differences.Max(), Is.LessThan(Tolerance), Describe(prompt, differences));
        Assert.That(batcher.LongRopeReruns, Is.EqualTo(1));
        Assert.That(batcher.LongRopeRerunPositions, Is.EqualTo(Original + 1), "the 16 cached positions and the pending token");
    }

    [TestCase(Lowering.Ort)]
    [TestCase(Lowering.Portable)]
    public async Task Batcher_rows_crossing_at_different_steps_each_match_the_reference(Lowering lowering)
    {
        // Rows cross after 10, 6 and 3 generated tokens; one starts past the switch. Between those steps rows on both
        // sides decode together.
        using var model = new DecoderModel(Export(lowering));
        using var batcher = OpenBatcher(model, sequences: 4);
        int[][] prompts = [Prompt(6, seed: 4), Prompt(10, seed: 5), Prompt(13, seed: 6), Prompt(20, seed: 7)];
        var runs = await Task.WhenAll(prompts.Select(p => Submit(batcher, p)));
        for (int i = 0; i < prompts.Length; i++)
        {
            var differences = Differences(prompts[i], runs[i].Result.TokenIds, runs[i].Logits);
            Assert.That(differences.Max(), Is.LessThan(Tolerance), $"prompt {i} ({prompts[i].Length} tokens): {Describe(prompts[i], differences)}");
        }
        Assert.That(batcher.LongRopeReruns, Is.EqualTo(3), "the three rows that started short run again once each");
    }

    [TestCase(Lowering.Ort)]
    [TestCase(Lowering.Portable)]
    public async Task Prefix_cache_hands_a_prompt_past_the_switch_no_short_factor_keys(Lowering lowering)
    {
        using var model = new DecoderModel(Export(lowering));
        using var batcher = OpenBatcher(model, sequences: 1);
        // A short sequence finishes (its KV stays as a prefix); a long prompt extending it must run whole with long factors.
        var first = Prompt(12, seed: 8);
        var (shortRun, _, _) = await Submit(batcher, first, newTokens: 2);
        var extended = first.Concat(shortRun.TokenIds).Concat(Prompt(6, seed: 9)).ToArray();   // 20 tokens
        var (longRun, longLogits, cached) = await Submit(batcher, extended, newTokens: 4);
        Assert.That(cached, Is.Zero, "short-factor keys serve no prompt past the switch");
        var differences = Differences(extended, longRun.TokenIds, longLogits);
        Assert.That(differences.Max(), Is.LessThan(Tolerance), Describe(extended, differences));
    }

    [Test]
    public async Task Prefix_cache_reuses_long_factor_keys_for_a_prompt_past_the_switch()
    {
        using var model = new DecoderModel(Export(Lowering.Ort));
        using var batcher = OpenBatcher(model, sequences: 1);
        var first = Prompt(10, seed: 11);
        var (crossed, _, _) = await Submit(batcher, first, newTokens: 12);   // crosses: its row's keys end long-factor ones
        var again = first.Concat(crossed.TokenIds.Take(9)).Concat(Prompt(3, seed: 12)).ToArray(); // 22 tokens, 19 of them cached
        var (result, logits, cached) = await Submit(batcher, again, newTokens: 4);
        Assert.That(cached, Is.EqualTo(19), "the crossed row's long-factor keys are reused");
        var differences = Differences(again, result.TokenIds, logits);
        Assert.That(differences.Max(), Is.LessThan(Tolerance), Describe(again, differences));
    }

    [Test]
    public async Task Batcher_speculation_across_the_switch_keeps_each_rows_greedy_tokens()
    {
        // The model drafts for itself (its own sessions cross the switch too), so every round verifies k drafts, and rows
        // cross at different steps: verification stops short of the switch, the crossing runs on a plain step.
        int[][] prompts = [Prompt(9, seed: 13), Prompt(12, seed: 14), Prompt(14, seed: 15)];
        string folder = Export(Lowering.Ort);
        var plain = prompts.Select(p => { var (tokens, _, session) = Generate(folder, p); session.Dispose(); return tokens; }).ToArray();
        using var model = new DecoderModel(folder);
        using var batcher = new ContinuousBatcher(model, TextTokenizer.Load(folder, model.Folder.BosTokenId),
            new BatcherOptions { MaxSequences = 3, Speculative = folder, AlwaysVerifyDrafts = true, DraftTokens = 4 });
        var results = await Task.WhenAll(prompts.Select(p => batcher.GenerateAsync(p, Greedy)));
        for (int i = 0; i < prompts.Length; i++) Assert.That(results[i].TokenIds, Is.EqualTo(plain[i]), $"prompt {i}");
        Assert.That(batcher.SpeculativeRounds, Is.GreaterThan(0), "drafts were verified");
        Assert.That(batcher.LongRopeReruns, Is.EqualTo(3));
    }
}
