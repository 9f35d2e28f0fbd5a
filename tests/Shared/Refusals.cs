using OnnxDecoder.Onnx;

namespace OnnxDecoder.Tests.Shared;

/// <summary>The shape of every hostile-input refusal: a ModelFormatException whose message starts with the file.</summary>
public static class Refusals
{
    public static void AssertRefused(Action open, string path, string problem)
    {
        var error = Assert.Throws(Is.InstanceOf<ModelFormatException>(), () => open())!;
        Assert.That(error.Message, Does.StartWith(Path.GetFullPath(path)), "the message names the file");
        Assert.That(error.Message, Does.Contain(problem));
    }
}
