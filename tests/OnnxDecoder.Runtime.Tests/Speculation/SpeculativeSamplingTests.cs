using OnnxDecoder.Modeling;
using OnnxDecoder.Runtime.Sampling;
using OnnxDecoder.Runtime.Speculation;
using OnnxDecoder.Runtime.Tokenization;

namespace OnnxDecoder.Runtime.Tests.Speculation;

/// <summary>
/// Speculative sampling must keep the target's distribution: over many seeded runs, the first three
/// generated tokens are distributed as without speculation (a chi-square homogeneity test at
/// p = 0.001). The same test run on two genuinely different distributions (another temperature) must
/// reject them, so it has the power to catch a biased verifier.
/// </summary>
[Parallelizable(ParallelScope.None)]
public class SpeculativeSamplingTests
{
    private const int Runs = 1000;
    private const string Prompt = "Once upon a time, there was a little girl. Once upon a time, there was a";

    /// <summary>Drafts from a distribution that differs from the target's on purpose: the same model's logits
    /// through a much colder chain (temperature 0.4, top-k 4), so the p/q test and the residual draw
    /// norm(max(0, p - q)) both decide many outputs.</summary>
    private sealed class ColderDrafter(DecoderSession session) : IDrafter
    {
        private readonly DecoderSession _session = session;
        private readonly Sampler _sampler = new(new SamplingOptions { Temperature = 0.4f, TopK = 4, Seed = 99 }, session.VocabSize);
        public string Name => "colder";
        public bool HasDistributions => true;
        public void Begin(DecoderSession target, SamplingOptions sampling) { }
        public void Keep(int length) { }

        public int Draft(IReadOnlyList<int> context, Span<int> drafts, float[] distributions, CancellationToken cancellationToken)
        {
            int vocab = _session.VocabSize;
            _session.Reset();
            var ids = context.Select(t => (long)t).ToArray();
            var logits = _session.Append(ids, ids.Length, cancellationToken: cancellationToken);
            for (int i = 0; i < drafts.Length; i++)
            {
                var q = distributions.AsSpan(i * vocab, vocab);
                _sampler.Distribution(logits, default, q);
                drafts[i] = _sampler.Choose(q);
                if (i + 1 < drafts.Length) logits = _session.Step([drafts[i]], cancellationToken);
            }
            return drafts.Length;
        }
    }

    private static int[][] Sample(Generator generator, SamplingOptions sampling, Func<IDrafter>? drafter, int k, int seedBase)
    {
        var counts = new int[3][];
        for (int t = 0; t < 3; t++) counts[t] = new int[generator.Session.VocabSize];
        var promptIds = generator.Tokenizer!.Encode(Prompt, addBos: true);
        var speculation = drafter is null ? null : new SpeculationOptions { Drafter = drafter(), DraftTokens = k, MissesBeforePause = int.MaxValue };
        int drafted = 0, accepted = 0;
        for (int run = 0; run < Runs; run++)
        {
            var result = generator.Generate(promptIds, new GenerationOptions
            {
                MaxNewTokens = 4, EosTokenIds = [], Sampling = sampling with { Seed = seedBase + run }, Speculation = speculation,
            });
            for (int t = 0; t < 3; t++) counts[t][result.TokenIds[t]]++;
            if (result.Speculation is { } stats) { drafted += stats.Drafted; accepted += stats.Accepted; }
        }
        TestContext.Out.WriteLine($"{speculation?.Drafter.Name ?? "plain"}: {drafted} drafted, {accepted} accepted");
        return counts;
    }


    [Test]
    public void Speculative_sampling_keeps_the_target_distribution_of_the_first_tokens()
    {
        string folder = Fixtures.Stories(Lowering.Ort);
        using var session = new DecoderSession(folder);
        var generator = new Generator(session, TextTokenizer.Load(folder, session.Folder.BosTokenId));
        var sampling = new SamplingOptions { Temperature = 1.5f, TopK = 12, TopP = 0.97f };
        using var draftSession = new DecoderSession(Fixtures.Stories(Lowering.Ort, float16: true));
        var plain = Sample(generator, sampling, null, 0, 1_000_000);
        var ngram = Sample(generator, sampling, () => new PromptLookupDrafter(1, 3), 2, 2_000_000);
        var skewed = Sample(generator, sampling, () => new ColderDrafter(draftSession), 2, 3_000_000);
        for (int t = 0; t < 3; t++)
        {
            var (s1, c1) = Homogeneity.ChiSquare(plain[t], ngram[t]);
            Assert.That(s1, Is.LessThan(c1), $"token {t + 1}: prompt lookup changes the distribution (chi-square {s1:F1} >= {c1:F1})");
            var (s2, c2) = Homogeneity.ChiSquare(plain[t], skewed[t]);
            Assert.That(s2, Is.LessThan(c2), $"token {t + 1}: a colder draft model changes the distribution (chi-square {s2:F1} >= {c2:F1})");
        }
        // Power: a verifier that kept every draft, or ignored the chain, would shift the distribution about this much.
        var hotter = Sample(generator, sampling with { Temperature = 0.9f }, null, 0, 4_000_000);
        var (s3, c3) = Homogeneity.ChiSquare(plain[1], hotter[1]);
        Assert.That(s3, Is.GreaterThan(c3), "the test cannot tell temperature 1.5 from 0.9: it would not catch a biased verifier");
    }
}
