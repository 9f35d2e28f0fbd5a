using OnnxDecoder.Runtime.Sampling;

namespace OnnxDecoder.Runtime.Tests.Sampling;

/// <summary>
/// The processor chain against a plain loop written here from the sampling rules the runtime has
/// always followed (CTRL repetition penalty once per distinct seen token, softmax at the
/// temperature, candidates by descending probability, top-k then min-p then top-p, one uniform
/// draw over the kept mass): same seed, same tokens, draw for draw.
/// </summary>
public class SamplerReferenceTests
{
    private const int Vocab = 512;

    /// <summary>The reference: one function, no shared code with the runtime.</summary>
    private static int ReferenceNext(float[] logits, int[] history, SamplingOptions o, Random random)
    {
        var scores = (float[])logits.Clone();
        if (o.RepetitionPenalty != 1)
            foreach (int id in history.Distinct())
                scores[id] = scores[id] > 0 ? scores[id] / o.RepetitionPenalty : scores[id] * o.RepetitionPenalty;
        if (o.Temperature <= 0 || o.TopK == 1)
        {
            int best = 0;
            for (int i = 1; i < scores.Length; i++) if (scores[i] > scores[best]) best = i;
            return best;
        }
        float max = scores.Max();
        double total = 0;
        for (int i = 0; i < scores.Length; i++) { scores[i] = MathF.Exp((scores[i] - max) / o.Temperature); total += scores[i]; }
        for (int i = 0; i < scores.Length; i++) scores[i] = (float)(scores[i] / total);
        // Descending probability; equal probabilities never matter below (the test's logits are distinct).
        var order = Enumerable.Range(0, scores.Length).OrderByDescending(i => scores[i]).ToArray();
        int keep = o.TopK > 0 ? Math.Min(o.TopK, order.Length) : order.Length;
        if (o.MinP > 0)
        {
            int k = 1;
            while (k < keep && scores[order[k]] >= o.MinP * scores[order[0]]) k++;
            keep = k;
        }
        if (o.TopP < 1)
        {
            double mass = 0;
            int k = 0;
            while (k < keep)
            {
                mass += scores[order[k]];
                k++;
                if (mass >= o.TopP - 1e-6) break;
            }
            keep = k;
        }
        double kept = 0;
        for (int k = 0; k < keep; k++) kept += scores[order[k]];
        double draw = random.NextDouble() * kept;
        for (int k = 0; k < keep; k++)
        {
            draw -= scores[order[k]];
            if (draw <= 0) return order[k];
        }
        return order[keep - 1];
    }

    private static IEnumerable<SamplingOptions> Settings()
    {
        yield return new SamplingOptions { Temperature = 0 };
        yield return new SamplingOptions { Temperature = 0, RepetitionPenalty = 1.3f };
        yield return new SamplingOptions { Temperature = 1 };
        yield return new SamplingOptions { Temperature = 0.7f, TopK = 40 };
        yield return new SamplingOptions { Temperature = 1.2f, TopP = 0.9f };
        yield return new SamplingOptions { Temperature = 0.8f, MinP = 0.05f };
        yield return new SamplingOptions { Temperature = 1.5f, TopK = 1 };
        yield return new SamplingOptions { Temperature = 0.9f, TopK = 50, TopP = 0.95f, MinP = 0.02f, RepetitionPenalty = 1.1f };
        yield return new SamplingOptions { Temperature = 2, TopP = 0.5f, RepetitionPenalty = 0.8f };
    }

    [TestCaseSource(nameof(Settings))]
    public void Same_seed_gives_the_reference_loops_tokens(SamplingOptions options)
    {
        var logitsSource = new Random(11);
        const int seed = 1234;
        var sampler = new Sampler(options with { Seed = seed }, Vocab);
        var reference = new Random(seed);
        var history = new List<int> { 1, 403, 407 };
        var ours = new List<int>();
        var theirs = new List<int>();
        for (int step = 0; step < 200; step++)
        {
            // Distinct logits, spread like a small model's (a few strong tokens, a long tail).
            var logits = new float[Vocab];
            for (int i = 0; i < Vocab; i++) logits[i] = (float)(logitsSource.NextDouble() * 8 - 6) + i * 1e-5f;
            int a = sampler.Next(logits, history.ToArray());
            int b = ReferenceNext(logits, [.. history], options, reference);
            ours.Add(a);
            theirs.Add(b);
            history.Add(b);
        }
        Assert.That(ours, Is.EqualTo(theirs));
        Assert.That(ours.Distinct().Count(), options.IsGreedy ? Is.GreaterThanOrEqualTo(1) : Is.GreaterThan(5), "a sampled run draws many tokens");
    }

    [Test]
    public void A_decode_step_allocates_nothing()
    {
        var options = new SamplingOptions { Temperature = 0.9f, TopK = 50, TopP = 0.95f, MinP = 0.02f, RepetitionPenalty = 1.1f, Seed = 5 };
        var sampler = new Sampler(options, Vocab);
        var logits = new float[Vocab];
        var random = new Random(3);
        for (int i = 0; i < Vocab; i++) logits[i] = (float)random.NextDouble() * 10;
        int[] history = [1, 2, 3, 4, 5, 6, 7];
        for (int i = 0; i < 10; i++) sampler.Next(logits, history); // warm up (JIT, first-use paths)
        // Three windows of 1,000 steps: a one-off (the runtime re-compiling a hot method mid-loop on a loaded machine)
        // lands in one window at most, while anything a step allocates, even every few hundred steps, shows in all three.
        var allocated = new long[3];
        for (int window = 0; window < allocated.Length; window++)
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            for (int i = 0; i < 1000; i++) sampler.Next(logits, history);
            allocated[window] = GC.GetAllocatedBytesForCurrentThread() - before;
        }
        Assert.That(allocated.Min(), Is.Zero, $"bytes allocated per 1,000 steps, three windows: {string.Join(", ", allocated)}");
    }
}
