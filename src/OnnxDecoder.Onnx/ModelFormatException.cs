namespace OnnxDecoder.Onnx;

/// <summary>
/// A file we did not write is malformed or unsafe. The message names the file and the problem;
/// <see cref="FilePath"/> holds the file.
/// </summary>
public class ModelFormatException : IOException
{
    public ModelFormatException(string filePath, string problem, Exception? inner = null)
        : base($"{filePath}: {problem}", inner)
    {
        FilePath = filePath;
        Problem = problem;
    }

    public string FilePath { get; }
    public string Problem { get; }
}
