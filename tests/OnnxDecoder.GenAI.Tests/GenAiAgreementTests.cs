using OnnxDecoder.Exporters;
using OnnxDecoder.Exporters.Tests;
using OnnxDecoder.Modeling;
using OnnxDecoder.Runtime;
using OnnxDecoder.Runtime.Tokenization;
using OnnxDecoder.Tests.Shared;
using OrtGenAI = Microsoft.ML.OnnxRuntimeGenAI;

namespace OnnxDecoder.GenAI.Tests;

/// <summary>Our stories260K exports load in onnxruntime-genai 0.18.0 and it generates our tokens.</summary>
[Parallelizable(ParallelScope.None)]
public class GenAiAgreementTests
{
    private string _root = "";

    [OneTimeSetUp] public void SetUp() => _root = TestPaths.NewTempFolder("genai");
    [OneTimeTearDown] public void TearDown() => Directory.Delete(_root, recursive: true);

    private string Export(Lowering lowering, bool float16 = false)
    {
        string folder = Path.Combine(_root, lowering.ToString() + (float16 ? "-fp16" : ""));
        if (Directory.Exists(folder)) return folder;
        ModelFolderWriter.Export(Stories260K.LegacyCheckpoint, Stories260K.Tokenizer, folder, new ExportOptions { Lowering = lowering, Float16 = float16 });
        return folder;
    }

    [TestCase(Lowering.Ort, false)]
    [TestCase(Lowering.Portable, false)]
    [TestCase(Lowering.Ort, true)]
    public void GenAI_greedy_tokens_equal_ours_and_llama2c(Lowering lowering, bool float16)
    {
        string folder = Export(lowering, float16);
        var (promptIds, goldenIds) = Stories260K.Golden();
        const int maxLength = 200;

        using var model = new OrtGenAI.Model(folder);
        using var parameters = new OrtGenAI.GeneratorParams(model);
        parameters.SetSearchOption("max_length", maxLength);
        parameters.SetSearchOption("do_sample", false);
        using var generator = new OrtGenAI.Generator(model, parameters);
        generator.AppendTokens(promptIds);
        var theirs = new List<int>();
        while (!generator.IsDone())
        {
            generator.GenerateNextToken();
            theirs.Add(generator.GetSequence(0)[^1]);
        }

        using var session = new DecoderSession(folder);
        var ours = new Generator(session, TextTokenizer.Load(folder, session.Folder.BosTokenId))
            .Generate(promptIds, new GenerationOptions { MaxNewTokens = maxLength - promptIds.Length }).TokenIds;

        Assert.That(theirs, Has.Count.EqualTo(maxLength - promptIds.Length), "GenAI counts the prompt inside max_length");
        Assert.That(theirs, Is.EqualTo(ours));
        Assert.That(theirs, Is.EqualTo(goldenIds.Take(theirs.Count)));
    }

    [Test]
    public void GenAI_tokenizer_reads_our_tokenizer_json_and_encodes_as_llama2c()
    {
        string folder = Export(Lowering.Ort);
        using var model = new OrtGenAI.Model(folder);
        using var tokenizer = new OrtGenAI.Tokenizer(model);
        // Excluded, by design of Hugging Face tokenizers: text that spells a special token ("<s>"),
        // which tokenizer.json matches as that token while llama2.c reads characters, and a literal
        // U+2581, which tokenizer.json cannot tell from an escaped space.
        var cases = Stories260K.Encodings().Where(c => c.Text.Length > 0 && !c.Text.Contains('\u2581') && !c.Text.Contains("<s>") && !c.Text.Contains("</s>") && !c.Text.Contains("<unk>")).ToList();
        Assert.That(cases, Has.Count.GreaterThanOrEqualTo(15));
        foreach (var (text, ids) in cases)
        {
            using var sequences = tokenizer.Encode(text);
            var theirs = sequences[0].ToArray().SkipWhile(id => id == 1).ToArray();
            Assert.That(theirs, Is.EqualTo(ids.Skip(1).ToArray()), $"text: \"{text}\"");
        }
    }
}
