using OnnxDecoder.Onnx;

namespace OnnxDecoder.Exporters.SafeTensors;

/// <summary>
/// The Hugging Face hub cache stores a download as <c>models--ORG--NAME/snapshots/REVISION/FILE</c>, each FILE a
/// symbolic link to <c>../../blobs/HASH</c>. Those links are the one kind a checkpoint may contain: a link is
/// followed only when the folder sits in such a snapshot and the link resolves, in one step, to a regular file
/// directly in that repository's <c>blobs</c> folder. Any other link is refused, so a checkpoint cannot pull a
/// file from elsewhere on the machine into an export.
/// </summary>
public static class HubCacheLinks
{
    /// <summary>The file <paramref name="path"/> stands for: itself when it is not a link, its blob when it is a hub
    /// cache link; otherwise a <see cref="ModelFormatException"/> naming the file and <paramref name="what"/> it is.</summary>
    public static string Resolve(string path, string what)
    {
        var info = new FileInfo(path);
        if (info.LinkTarget is not { } target) return path;
        string folder = Path.GetDirectoryName(Path.GetFullPath(path))!;
        string resolved = Path.GetFullPath(Path.Combine(folder, target));
        string? snapshots = Path.GetDirectoryName(folder);
        string? repository = snapshots is null ? null : Path.GetDirectoryName(snapshots);
        bool inSnapshot = snapshots is not null && repository is not null && Path.GetFileName(snapshots) == "snapshots";
        string? blobs = repository is null ? null : Path.Combine(repository, "blobs");
        bool toBlob = inSnapshot && Path.GetDirectoryName(resolved) == blobs && new FileInfo(resolved) is { Exists: true, LinkTarget: null };
        if (!toBlob)
            throw new ModelFormatException(path,
                $"is a symbolic link (to '{target}'); {what} must be a regular file, or a Hugging Face hub cache link into its repository's blobs folder: replace it with a copy");
        return resolved;
    }
}
