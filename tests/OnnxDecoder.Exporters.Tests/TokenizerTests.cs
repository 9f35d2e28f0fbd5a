using OnnxDecoder.Exporters.Llama2c;
using OnnxDecoder.Exporters.Tokenizers;
using OnnxDecoder.Runtime.Tokenization;
using OnnxDecoder.Tests.Shared;

namespace OnnxDecoder.Exporters.Tests;

public class Llama2cTokenizerTests
{
    private static TextTokenizer Converted()
    {
        var vocabulary = Llama2cTokenizer.Read(Stories260K.Tokenizer, 512);
        string folder = TestPaths.NewTempFolder();
        try
        {
            using (var file = File.Create(Path.Combine(folder, "tokenizer.model"))) SentencePieceModelWriter.Write(vocabulary, file);
            return TextTokenizer.Load(folder, bosTokenId: 1);
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    [Test]
    public void Converted_tok512_encodes_the_20_published_strings_as_llama2c_does()
    {
        var tokenizer = Converted();
        foreach (var (text, ids) in Stories260K.Encodings())
            Assert.That(tokenizer.Encode(text, addBos: true), Is.EqualTo(ids), $"text: \"{text}\"");
    }
}
