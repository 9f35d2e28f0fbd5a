using System.Collections.Concurrent;
using OnnxDecoder.Modeling;
using OnnxDecoder.Runtime.Tokenization;

namespace OnnxDecoder.Runtime.Tests;

/// <summary>The batcher's scheduling policy: priorities decide admission, a per-step token budget
/// splits prompts into chunks between decode steps, and outputs stay exact either way.</summary>
public class BatcherPolicyTests
{
    [Test]
    public async Task A_higher_priority_request_is_admitted_before_earlier_ones_of_lower_priority()
    {
        string folder = Fixtures.Stories(Lowering.Ort);
        using var model = new DecoderModel(folder);
        var tokenizer = TextTokenizer.Load(folder, model.Folder.BosTokenId);
        using var batcher = new ContinuousBatcher(model, tokenizer, new BatcherOptions { MaxSequences = 1 });
        var prompt = tokenizer.Encode("Once upon a time", addBos: true);
        using var holding = batcher.Submit(prompt, new GenerationOptions { MaxNewTokens = 10_000 });
        await holding.Tokens.ReadAsync(); // the only row is taken
        var finished = new ConcurrentQueue<string>();
        // Completions are observed through thread-pool continuations: each request decodes long enough
        // (120 steps) that the one row's serving order, not continuation latency, decides what is seen first.
        var options = new GenerationOptions { MaxNewTokens = 120 };
        using var low = batcher.Submit(prompt, options, priority: 0);
        using var lowToo = batcher.Submit(prompt, options, priority: 0);
        using var high = batcher.Submit(prompt, options, priority: 5);
        var all = new[] { (low, "low"), (lowToo, "low too"), (high, "high") }.Select(async s => { await s.Item1.Completion; finished.Enqueue(s.Item2); }).ToArray();
        Assert.That(batcher.QueueLength, Is.EqualTo(3));
        holding.Cancel();
        await Task.WhenAll(all).WaitAsync(TimeSpan.FromSeconds(60));
        Assert.That(finished, Is.EqualTo(new[] { "high", "low", "low too" }), "one row serves them in admission order: priority first, then arrival");
    }

    [TestCase(Lowering.Ort, 3)]
    [TestCase(Lowering.Ort, 1)]
    [TestCase(Lowering.Portable, 4)]
    public async Task A_step_token_budget_chunks_prompts_between_decode_steps_and_outputs_stay_exact(Lowering lowering, int budget)
    {
        string folder = Fixtures.Stories(lowering);
        using var model = new DecoderModel(folder);
        var tokenizer = TextTokenizer.Load(folder, model.Folder.BosTokenId);
        using var batcher = new ContinuousBatcher(model, tokenizer, new BatcherOptions { MaxSequences = 3, StepTokenBudget = budget });
        string[] prompts = ["Once upon a time", "One day, Lily went to the park with her mom and", "A big red ball rolled down the hill and the children", "The sun"];
        var results = await Task.WhenAll(prompts.Select((p, i) =>
            batcher.GenerateAsync(tokenizer.Encode(p, addBos: true), new GenerationOptions { MaxNewTokens = 20 + 5 * i })));
        using var single = new DecoderSession(model);
        var alone = new Generator(single, tokenizer);
        for (int i = 0; i < prompts.Length; i++)
            Assert.That(results[i].TokenIds, Is.EqualTo(alone.Generate(prompts[i], new GenerationOptions { MaxNewTokens = 20 + 5 * i }).TokenIds), prompts[i]);
        Assert.That((double)batcher.RowSteps / batcher.Steps, Is.GreaterThan(1.2), "prompts joined while others decoded");
    }
}
