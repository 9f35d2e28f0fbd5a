using System.Buffers.Binary;
using System.Text;

namespace OnnxDecoder.Reliability.Tests;

/// <summary>Seeded, reproducible corruptions of a valid file: case N of a parser is always the same bytes.</summary>
public static class Mutator
{
    private static readonly ulong[] Extremes =
        [0, 1, 0x7F, 0xFF, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF, (1UL << 42) + 1, 1UL << 62, long.MaxValue, ulong.MaxValue];

    public static (byte[] Bytes, string How) Binary(byte[] seed, int caseNumber, int headerBytes = 128)
    {
        var random = new Random(caseNumber * 7919 + 17);
        var bytes = (byte[])seed.Clone();
        switch (caseNumber % 6)
        {
            case 0:
            {
                int flips = 1 + random.Next(4);
                for (int i = 0; i < flips && bytes.Length > 0; i++) bytes[random.Next(bytes.Length)] ^= (byte)(1 << random.Next(8));
                return (bytes, $"{flips} bit flips");
            }
            case 1:
            {
                int length = random.Next(bytes.Length);
                return (bytes[..length], $"truncated to {length}");
            }
            case 2:
            case 3:
            {
                // A length, count or offset field set to an extreme: mostly in the header, where they live.
                int width = random.Next(2) == 0 ? 4 : 8;
                int span = caseNumber % 6 == 2 ? Math.Min(headerBytes, bytes.Length) : bytes.Length;
                if (span < width) return (bytes, "unchanged (too short)");
                int at = random.Next(span - width + 1);
                ulong value = Extremes[random.Next(Extremes.Length)];
                if (width == 4) BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(at), (uint)value);
                else BinaryPrimitives.WriteUInt64LittleEndian(bytes.AsSpan(at), value);
                return (bytes, $"{width} bytes at {at} set to {value}");
            }
            case 4:
            {
                int at = random.Next(bytes.Length + 1), count = 1 + random.Next(8);
                var inserted = new byte[count];
                random.NextBytes(inserted);
                return ([.. bytes[..at], .. inserted, .. bytes[at..]], $"{count} bytes inserted at {at}");
            }
            default:
            {
                if (bytes.Length == 0) return (bytes, "unchanged (empty)");
                int at = random.Next(bytes.Length), count = Math.Min(1 + random.Next(16), bytes.Length - at);
                return ([.. bytes[..at], .. bytes[(at + count)..]], $"{count} bytes deleted at {at}");
            }
        }
    }

    private const string JsonNoise = "{}[]\":,0123456789-+.eE \\nulltruefalse\u0000\uFFFF";

    /// <summary>Text files: character edits that keep or break JSON, plus the binary mutations.</summary>
    public static (byte[] Bytes, string How) Text(byte[] seed, int caseNumber)
    {
        if (caseNumber % 3 != 0) return Binary(seed, caseNumber, headerBytes: seed.Length);
        var random = new Random(caseNumber * 104729 + 3);
        var text = new StringBuilder(Encoding.UTF8.GetString(seed));
        int edits = 1 + random.Next(3);
        for (int i = 0; i < edits && text.Length > 0; i++)
        {
            int at = random.Next(text.Length);
            char noise = JsonNoise[random.Next(JsonNoise.Length)];
            switch (random.Next(3))
            {
                case 0: text[at] = noise; break;
                case 1: text.Insert(at, noise); break;
                default: text.Remove(at, 1); break;
            }
        }
        return (Encoding.UTF8.GetBytes(text.ToString()), $"{edits} character edits");
    }
}
