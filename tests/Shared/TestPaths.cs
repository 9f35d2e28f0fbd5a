namespace OnnxDecoder.Tests.Shared;

/// <summary>Where the tests find the repository and the read-only shared data beside it.</summary>
public static class TestPaths
{
    /// <summary>The repository root (the folder that holds OnnxDecoder.sln).</summary>
    public static string RepoRoot { get; } = FindRepoRoot();

    /// <summary><c>../shared</c> relative to the repository root.</summary>
    public static string Shared => Path.GetFullPath(Path.Combine(RepoRoot, "..", "shared"));

    /// <summary>A file under ../shared; fails the test loudly (never skips) when it is absent.</summary>
    public static string SharedFile(params string[] parts)
    {
        string path = Path.Combine([Shared, .. parts]);
        if (!File.Exists(path))
            Assert.Fail($"required shared data is missing: {path}. Tests expect ../shared beside the repository (see README).");
        return path;
    }

    /// <summary>A fresh empty folder under the system temp folder, removed by the caller's TearDown.</summary>
    public static string NewTempFolder(string prefix = "onnxdecoder")
    {
        string path = Path.Combine(Path.GetTempPath(), $"{prefix}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(path);
        return path;
    }

    private static string FindRepoRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "OnnxDecoder.sln"))) dir = dir.Parent;
        return dir?.FullName ?? throw new InvalidOperationException($"OnnxDecoder.sln not found above {AppContext.BaseDirectory}");
    }
}
