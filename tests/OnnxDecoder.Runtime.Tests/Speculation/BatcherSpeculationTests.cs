using OnnxDecoder.Exporters;
using OnnxDecoder.Modeling;
using OnnxDecoder.Runtime.Sampling;
using OnnxDecoder.Runtime.Sampling.Constraints;
using OnnxDecoder.Runtime.Tokenization;

namespace OnnxDecoder.Runtime.Tests.Speculation;

/// <summary>Speculative decoding in the continuous batcher: every request, speculative or not, must get
/// exactly what the non-speculative batcher gives it under greedy decoding, whatever the other rows draft;
/// sampling must keep each request's distribution; the stop rules, cancellation and constraints still hold.</summary>
[Parallelizable(ParallelScope.None)]
public class BatcherSpeculationTests
{
    private static readonly string[] StoryPrompts =
    [
        "Once upon a time, there was a little girl named Lily. She loved to play outside. Once upon a time, there was a little girl",
        "Tom had a red ball. He liked to",
        "The sun was hot. The sun was hot. The sun",
        "One day, Lily went to the park with her mom and",
        "The little dog ran and ran. The little dog ran and",
        "She was sad",
        "Every morning the cat sat on the mat. Every morning the cat",
        "A big red ball rolled down the hill and the children",
    ];

    private static readonly string[] SynthPrompts =
        ["hello hello hello world", "abc abc abc", "the cat sat on the mat and the cat", "one two three one two", "zz", "the the the the"];

    /// <summary>A second synth llama-tiny (another seed): the same tokenizer, other weights, so most drafts are rejected.</summary>
    private static string SynthDraft() => Fixtures.SynthExport("llama-tiny", seed: 11);

    private sealed record Request(int[] Prompt, int MaxTokens, bool Speculative = true, IReadOnlyList<string>? Stops = null);

    private static async Task<GenerationResult[]> RunAll(DecoderModel model, TextTokenizer tokenizer, BatcherOptions options, Request[] requests)
    {
        using var batcher = new ContinuousBatcher(model, tokenizer, options);
        var results = await Task.WhenAll(requests.Select(r => Task.Run(async () =>
        {
            using var sequence = batcher.Submit(r.Prompt, new GenerationOptions { MaxNewTokens = r.MaxTokens, StopStrings = r.Stops ?? [] }, speculative: r.Speculative);
            return await sequence.Completion.ConfigureAwait(false);
        })));
        Assert.That(batcher.Outstanding, Is.Zero);
        return results;
    }

    private static IEnumerable<TestCaseData> GreedyCases()
    {
        foreach (int k in new[] { 1, 3, 5 })
        {
            yield return new TestCaseData("stories", "ngram", k, 6).SetName($"Stories260K_ngram_k{k}_6_rows");
            yield return new TestCaseData("synth", "ngram", k, 4).SetName($"Synth_llama_tiny_ngram_k{k}_4_rows");
        }
        yield return new TestCaseData("stories", "draft", 3, 4).SetName("Stories260K_fp16_draft_model_k3_4_rows");
        yield return new TestCaseData("synth", "draft", 2, 4).SetName("Synth_llama_tiny_other_seed_draft_model_k2_4_rows");
    }

    [TestCaseSource(nameof(GreedyCases))]
    public async Task Greedy_requests_speculative_or_not_get_what_the_plain_batcher_gives(string modelName, string drafter, int k, int rows)
    {
        string folder = modelName == "stories" ? Fixtures.Stories(Lowering.Ort) : Fixtures.SynthLlamaTiny();
        string[] prompts = modelName == "stories" ? StoryPrompts : SynthPrompts;
        using var model = new DecoderModel(folder);
        var tokenizer = TextTokenizer.Load(folder, model.Folder.BosTokenId);
        // More requests than rows, of different lengths; every third one opts out of speculation.
        var requests = Enumerable.Range(0, 2 * rows + 1)
            .Select(i => new Request(tokenizer.Encode(prompts[i % prompts.Length], addBos: true), 10 + 9 * (i % 5), Speculative: i % 3 != 2)).ToArray();
        var plainOptions = new BatcherOptions { MaxSequences = rows };
        string speculative = drafter == "ngram" ? "ngram" : modelName == "stories" ? Fixtures.Stories(Lowering.Ort, float16: true) : SynthDraft();
        var plain = await RunAll(model, tokenizer, plainOptions, requests);

        // Every step verifies its drafts, each row in a run of its own, beside rows that do not speculate.
        using var batcher = new ContinuousBatcher(model, tokenizer, plainOptions with { Speculative = speculative, DraftTokens = k, AlwaysVerifyDrafts = true });
        var fast = await Task.WhenAll(requests.Select(r => Task.Run(async () =>
        {
            using var sequence = batcher.Submit(r.Prompt, new GenerationOptions { MaxNewTokens = r.MaxTokens }, speculative: r.Speculative);
            return await sequence.Completion.ConfigureAwait(false);
        })));
        for (int i = 0; i < requests.Length; i++)
        {
            Assert.That(fast[i].TokenIds, Is.EqualTo(plain[i].TokenIds), $"request {i} ({(requests[i].Speculative ? "speculative" : "plain")})");
            Assert.That(fast[i].Text, Is.EqualTo(plain[i].Text), $"request {i}");
            Assert.That(fast[i].StopReason, Is.EqualTo(plain[i].StopReason), $"request {i}");
            Assert.That(fast[i].Speculation is null, Is.EqualTo(!requests[i].Speculative), $"request {i}: statistics only for speculative requests");
            Assert.That(plain[i].Speculation, Is.Null);
        }
        long drafted = fast.Sum(r => r.Speculation?.Drafted ?? 0), accepted = fast.Sum(r => r.Speculation?.Accepted ?? 0);
        TestContext.Out.WriteLine($"{drafted} drafted, {accepted} accepted, {batcher.Steps} steps, {batcher.RowSteps} tokens");
        Assert.That(batcher.DraftedTokens, Is.EqualTo(drafted), "the batcher's counters sum the requests'");
        Assert.That(batcher.AcceptedDraftTokens, Is.EqualTo(accepted));
        Assert.That(batcher.Speculative, Is.EqualTo(speculative));
        Assert.That(drafted, Is.GreaterThan(0), "nothing drafted: verification untested");
        Assert.That(accepted, Is.LessThan(drafted), "every draft accepted: the per-row rollback untested");
        if (modelName == "stories") Assert.That(accepted, Is.GreaterThan(0), "no draft accepted: multi-token steps untested");
        Assert.That(batcher.RowSteps, Is.GreaterThan(batcher.Steps), "verified drafts give more than one token per run");
    }

    [Test]
    public async Task Full_contexts_chunked_prefill_cached_rows_and_stop_strings_match_the_plain_batcher()
    {
        // 56 positions: rows reach the max length while others draft; chunked prompts ride along in wide steps;
        // finished rows stay cached for later prompts; stop strings cut a verified round short.
        string folder = Fixtures.Stories(Lowering.Ort);
        using var model = new DecoderModel(folder);
        var tokenizer = TextTokenizer.Load(folder, model.Folder.BosTokenId);
        string[] stops = ["girl", ".", "Lily", "ran"];
        var requests = Enumerable.Range(0, 14).Select(i => new Request(tokenizer.Encode(StoryPrompts[i % StoryPrompts.Length], addBos: true), 8 + 11 * (i % 4),
            Stops: i % 4 == 1 ? [stops[i % stops.Length]] : null)).ToArray();
        var options = new BatcherOptions { MaxSequences = 3, MaxLength = 56, PrefillChunk = 5 };
        var plain = await RunAll(model, tokenizer, options, requests);
        var fast = await RunAll(model, tokenizer, options with { Speculative = "ngram", DraftTokens = 4, AlwaysVerifyDrafts = true }, requests);
        for (int i = 0; i < requests.Length; i++)
        {
            Assert.That(fast[i].TokenIds, Is.EqualTo(plain[i].TokenIds), $"request {i}");
            Assert.That(fast[i].Text, Is.EqualTo(plain[i].Text), $"request {i}");
            Assert.That(fast[i].StopReason, Is.EqualTo(plain[i].StopReason), $"request {i}");
        }
        Assert.That(plain.Select(r => r.StopReason), Does.Contain(StopReason.ContextFull).And.Contain(StopReason.StopString).And.Contain(StopReason.MaxTokens));
        Assert.That(fast.Sum(r => r.Speculation!.Accepted), Is.GreaterThan(0));
    }

    [Test]
    public async Task By_default_a_lone_sequence_verifies_its_drafts_and_gets_the_plain_output()
    {
        string folder = Fixtures.Stories(Lowering.Ort);
        using var model = new DecoderModel(folder);
        var tokenizer = TextTokenizer.Load(folder, model.Folder.BosTokenId);
        var requests = new[] { new Request(tokenizer.Encode(StoryPrompts[0], addBos: true), 60) };
        var plain = await RunAll(model, tokenizer, new BatcherOptions { MaxSequences = 4 }, requests);
        using var batcher = new ContinuousBatcher(model, tokenizer, new BatcherOptions { MaxSequences = 4, Speculative = "ngram", DraftTokens = 4 });
        var fast = await batcher.GenerateAsync(requests[0].Prompt, new GenerationOptions { MaxNewTokens = 60 });
        Assert.That(fast.TokenIds, Is.EqualTo(plain[0].TokenIds));
        Assert.That(fast.Speculation!.Accepted, Is.GreaterThan(0));
        Assert.That(batcher.Steps, Is.LessThan(plain[0].TokenIds.Length - 1), "accepted drafts save runs");
    }

    [Test]
    public async Task A_constrained_request_decodes_without_speculation_beside_speculating_ones()
    {
        string folder = Fixtures.Stories(Lowering.Ort);
        using var model = new DecoderModel(folder);
        var tokenizer = TextTokenizer.Load(folder, model.Folder.BosTokenId);
        using var batcher = new ContinuousBatcher(model, tokenizer, new BatcherOptions { MaxSequences = 3, Speculative = "ngram", DraftTokens = 3 });
        var constraint = new GrammarConstraint(RegexGrammar.Compile("[a-z ]{3,20}\\."));
        var free = batcher.GenerateAsync(tokenizer.Encode(StoryPrompts[2], addBos: true), new GenerationOptions { MaxNewTokens = 40 });
        var constrained = await batcher.GenerateAsync(tokenizer.Encode("Once upon a time", addBos: true), new GenerationOptions { MaxNewTokens = 30, Constraint = constraint });
        Assert.That(constrained.Text, Does.Match("^[a-z ]{3,20}\\.$"));
        Assert.That(constrained.Speculation, Is.Null, "a constrained request decodes one token per step");
        using var session = new DecoderSession(folder);
        var alone = new Generator(session, tokenizer).Generate("Once upon a time", new GenerationOptions { MaxNewTokens = 30, Constraint = constraint });
        Assert.That(constrained.Text, Is.EqualTo(alone.Text));
        Assert.That((await free).Speculation!.Drafted, Is.GreaterThan(0));
    }

    [Test]
    public async Task Cancelling_a_speculating_request_frees_its_row_and_the_others_finish_exactly()
    {
        string folder = Fixtures.Stories(Lowering.Ort);
        using var model = new DecoderModel(folder);
        var tokenizer = TextTokenizer.Load(folder, model.Folder.BosTokenId);
        var prompt = tokenizer.Encode(StoryPrompts[0], addBos: true);
        var plain = await RunAll(model, tokenizer, new BatcherOptions { MaxSequences = 2 }, [new Request(prompt, 60)]);
        using var batcher = new ContinuousBatcher(model, tokenizer, new BatcherOptions { MaxSequences = 2, Speculative = "ngram", DraftTokens = 4 });
        using var cancel = new CancellationTokenSource();
        using var doomed = batcher.Submit(tokenizer.Encode(StoryPrompts[4], addBos: true), new GenerationOptions { MaxNewTokens = 200, EosTokenIds = [] }, cancel.Token);
        var kept = batcher.GenerateAsync(prompt, new GenerationOptions { MaxNewTokens = 60 });
        await doomed.Tokens.ReadAsync();
        cancel.Cancel();
        Assert.That(async () => await doomed.Completion, Throws.InstanceOf<OperationCanceledException>());
        Assert.That((await kept).TokenIds, Is.EqualTo(plain[0].TokenIds));
        Assert.That(batcher.Outstanding, Is.Zero);
    }

    [Test]
    public void Speculation_over_a_shared_timeline_or_with_an_unknown_drafter_is_refused_with_what_to_do()
    {
        string portable = Fixtures.Stories(Lowering.Portable);
        using var model = new DecoderModel(portable);
        var tokenizer = TextTokenizer.Load(portable, model.Folder.BosTokenId);
        var e = Assert.Throws<NotSupportedException>(() => new ContinuousBatcher(model, tokenizer, new BatcherOptions { Speculative = "ngram" }).Dispose());
        Assert.That(e!.Message, Does.Contain(portable).And.Contain("--lowering ort"));
        string ort = Fixtures.Stories(Lowering.Ort);
        using var ortModel = new DecoderModel(ort);
        var a = Assert.Throws<ArgumentException>(() => new ContinuousBatcher(ortModel, tokenizer, new BatcherOptions { Speculative = "/no/such/folder" }).Dispose());
        Assert.That(a!.Message, Does.Contain("/no/such/folder").And.Contain("ngram"));
        var k = Assert.Throws<ArgumentOutOfRangeException>(() => new ContinuousBatcher(ortModel, tokenizer, new BatcherOptions { Speculative = "ngram", DraftTokens = 0 }).Dispose());
        Assert.That(k!.Message, Does.Contain("DraftTokens"));
        var v = Assert.Throws<ArgumentException>(() => new ContinuousBatcher(ortModel, tokenizer, new BatcherOptions { Speculative = Fixtures.SynthLlamaTiny() }).Dispose());
        Assert.That(v!.Message, Does.Contain(Fixtures.SynthLlamaTiny()).And.Contain("tokenizer"));
    }

    /// <summary>
    /// Sampling through the speculative batcher keeps the target distribution: over many seeded requests decoded
    /// together, the first three tokens are distributed as in the plain batcher (chi-square homogeneity at
    /// p = 0.001, bins under 10 merged); the same test tells temperature 1.5 from 0.9, so it can catch a biased verifier.
    /// </summary>
    [Test]
    public async Task Speculative_sampling_in_the_batch_keeps_the_target_distribution()
    {
        const int runs = 800;
        string folder = Fixtures.Stories(Lowering.Ort);
        using var model = new DecoderModel(folder);
        var tokenizer = TextTokenizer.Load(folder, model.Folder.BosTokenId);
        var prompt = tokenizer.Encode("Once upon a time, there was a little girl. Once upon a time, there was a", addBos: true);
        var sampling = new SamplingOptions { Temperature = 1.5f, TopK = 12, TopP = 0.97f };

        async Task<int[][]> Sample(string? speculative, SamplingOptions chain, int seedBase)
        {
            using var batcher = new ContinuousBatcher(model, tokenizer, new BatcherOptions
            {
                MaxSequences = 8, MaxQueueLength = runs, Speculative = speculative, DraftTokens = 2, AlwaysVerifyDrafts = true,
            });
            var results = await Task.WhenAll(Enumerable.Range(0, runs).Select(run =>
                batcher.GenerateAsync(prompt, new GenerationOptions { MaxNewTokens = 4, EosTokenIds = [], Sampling = chain with { Seed = seedBase + run } })));
            var counts = new int[3][];
            for (int t = 0; t < 3; t++)
            {
                counts[t] = new int[model.Folder.VocabSize];
                foreach (var result in results) counts[t][result.TokenIds[t]]++;
            }
            if (speculative is not null)
            {
                TestContext.Out.WriteLine($"{batcher.DraftedTokens} drafted, {batcher.AcceptedDraftTokens} accepted");
                Assert.That(batcher.AcceptedDraftTokens, Is.GreaterThan(runs / 4), "too few drafts accepted for the verifier to decide many tokens");
            }
            return counts;
        }

        var plain = await Sample(null, sampling, 1_000_000);
        var fast = await Sample("ngram", sampling, 2_000_000);
        for (int t = 0; t < 3; t++)
        {
            var (statistic, critical) = Homogeneity.ChiSquare(plain[t], fast[t]);
            Assert.That(statistic, Is.LessThan(critical), $"token {t + 1}: speculation in the batch changes the distribution (chi-square {statistic:F1} >= {critical:F1})");
        }
        var hotter = await Sample(null, sampling with { Temperature = 0.9f }, 3_000_000);
        var (s, c) = Homogeneity.ChiSquare(plain[1], hotter[1]);
        Assert.That(s, Is.GreaterThan(c), "the test cannot tell temperature 1.5 from 0.9: it would not catch a biased verifier");
    }
}
