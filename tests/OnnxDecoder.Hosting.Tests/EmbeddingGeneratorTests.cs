using Microsoft.Extensions.AI;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using OnnxDecoder.Exporters;
using OnnxDecoder.Exporters.Synth;
using OnnxDecoder.Modeling;
using OnnxDecoder.Runtime;
using OnnxDecoder.Tests.Shared;

namespace OnnxDecoder.Hosting.Tests;

/// <summary>
/// AddOnnxDecoder registers IEmbeddingGenerator for a folder exported with --hidden-states (and none without):
/// through DI, texts give the embeddings of the ids Hugging Face's tokenizer(text) makes, as the runtime's
/// EmbeddingRunner computes them (which the runtime tests check against the reference forward pass).
/// </summary>
[Parallelizable(ParallelScope.None)]
public class EmbeddingGeneratorTests
{
    private static string _root = "", _embedding = "", _plain = "";

    [OneTimeSetUp]
    public void Export()
    {
        _root = TestPaths.NewTempFolder("hosting-embeddings");
        string checkpoint = Path.Combine(_root, "qwen3-tiny");
        SynthPresets.Write("qwen3-tiny", seed: 21, checkpoint);
        _embedding = Path.Combine(_root, "qwen3-embedding");
        _plain = Path.Combine(_root, "qwen3-plain");
        ModelFolderWriter.Export(checkpoint, null, _embedding, new ExportOptions { Lowering = Lowering.Ort, HiddenStatesOutput = true, Pooling = EmbeddingPooling.Last });
        ModelFolderWriter.Export(checkpoint, null, _plain, new ExportOptions { Lowering = Lowering.Ort });
    }

    [OneTimeTearDown] public void Delete() => Directory.Delete(_root, recursive: true);

    private static async Task<IHost> Started(string model)
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Configuration.AddInMemoryCollection(new Dictionary<string, string?> { ["OnnxDecoder:ModelPath"] = model, ["OnnxDecoder:MaxConcurrentSequences"] = "1" });
        builder.Services.AddOnnxDecoder(builder.Configuration.GetSection(OnnxDecoderOptions.Section));
        var host = builder.Build();
        await host.StartAsync();
        return host;
    }

    [Test]
    public async Task Texts_through_DI_equal_the_runner_on_their_token_ids()
    {
        using var host = await Started(_embedding);
        var generator = host.Services.GetRequiredService<IEmbeddingGenerator<string, Embedding<float>>>();
        string[] texts = ["Once upon a time", "a dragon", "Retrieval pipelines need embeddings from the same runtime.", "x"];
        var generated = await generator.GenerateAsync(texts);
        await host.StopAsync();

        using var model = new DecoderModel(_embedding);
        var tokenizer = Runtime.Tokenization.TextTokenizer.Load(_embedding, model.Folder.BosTokenId);
        var ids = texts.Select(t => (IReadOnlyList<int>)tokenizer.EncodeText(t, addSpecialTokens: true)).ToList();
        var expected = new EmbeddingRunner(model).Embed(ids.Select(i => (IReadOnlyList<int>)i).ToList());

        Assert.That(generated, Has.Count.EqualTo(texts.Length));
        for (int i = 0; i < texts.Length; i++)
        {
            var vector = generated[i].Vector.ToArray();
            Assert.That(vector, Has.Length.EqualTo(model.Folder.HiddenSize));
            Assert.That(vector.Zip(expected[i], (a, b) => Math.Abs(a - b)).Max(), Is.LessThan(1e-5f), texts[i]);
            Assert.That(Math.Sqrt(vector.Sum(v => (double)v * v)), Is.EqualTo(1).Within(1e-5), "L2-normalised");
        }
        Assert.That(generated.Usage!.InputTokenCount, Is.EqualTo(ids.Sum(i => i.Count)));
        var metadata = generator.GetService<EmbeddingGeneratorMetadata>()!;
        Assert.That(metadata.DefaultModelDimensions, Is.EqualTo(model.Folder.HiddenSize));
        Assert.That(metadata.DefaultModelId, Is.EqualTo("qwen3-embedding"));
    }

    [Test]
    public async Task A_folder_without_hidden_states_registers_no_embedding_generator()
    {
        using var host = await Started(_plain);
        Assert.That(host.Services.GetService<IEmbeddingGenerator<string, Embedding<float>>>(), Is.Null);
        Assert.That(host.Services.GetService<IChatClient>(), Is.Not.Null);
        await host.StopAsync();
    }
}
