using System.Text;
using Google.Protobuf;
using OnnxDecoder.Exporters.Llama2c;

namespace OnnxDecoder.Exporters.Tokenizers;

/// <summary>
/// Writes a SentencePiece model file (sentencepiece_model.proto, BPE) from a llama2.c vocabulary,
/// so Microsoft.ML.Tokenizers' SentencePieceTokenizer runs it. Field numbers are those of the
/// SentencePiece format: ModelProto.pieces 1, trainer_spec 2, normalizer_spec 3; SentencePiece
/// piece 1, score 2, type 3; TrainerSpec model_type 3, vocab_size 4, byte_fallback 35, unk_id 40,
/// bos_id 41, eos_id 42, pad_id 43; NormalizerSpec name 1, add_dummy_prefix 3,
/// remove_extra_whitespaces 4, escape_whitespaces 5.
/// <para>llama2.c keeps spaces as ' ' in its pieces and adds a dummy-prefix space, merges by the
/// highest score, and falls back to &lt;0xNN&gt; byte tokens: the same algorithm with whitespace
/// escaping off and runs of spaces kept.</para>
/// </summary>
public static class SentencePieceModelWriter
{
    /// <summary>SentencePiece piece types (NORMAL 1, UNKNOWN 2, CONTROL 3, USER_DEFINED 4, UNUSED 5, BYTE 6).</summary>
    public enum PieceType { Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6 }

    /// <summary>A llama2.c vocabulary: spaces stay ' ' in pieces, so whitespace escaping is off.</summary>
    public static void Write(Llama2cTokenizer tokenizer, Stream destination) =>
        Write(Pieces(tokenizer), escapeWhitespaces: false, unkId: 0, bosId: 1, eosId: 2, destination);

    /// <summary>A llama2.c vocabulary as SentencePiece pieces: ids 0-2 are unk/BOS/EOS, "&lt;0xNN&gt;" are byte pieces.</summary>
    public static List<(string Piece, float Score, PieceType Type)> Pieces(Llama2cTokenizer tokenizer)
    {
        var utf8 = new UTF8Encoding(false, throwOnInvalidBytes: true);
        var pieces = new List<(string Piece, float Score, PieceType Type)>();
        for (int id = 0; id < tokenizer.Pieces.Count; id++)
        {
            byte[] raw = tokenizer.Pieces[id];
            (string, PieceType) entry;
            if (id == 0) entry = ("<unk>", PieceType.Unknown);
            else if (id == 1) entry = ("<s>", PieceType.Control);
            else if (id == 2) entry = ("</s>", PieceType.Control);
            else if (raw.Length == 6 && raw[0] == '<' && raw[1] == '0' && raw[2] == 'x' && raw[5] == '>') entry = (Encoding.ASCII.GetString(raw), PieceType.Byte);
            else
            {
                try
                {
                    entry = (utf8.GetString(raw), PieceType.Normal);
                }
                catch (DecoderFallbackException)
                {
                    // A piece that is not UTF-8 text can never be produced from text: keep its id, unused.
                    entry = ($"<unused_{id}>", PieceType.Unused);
                }
            }
            pieces.Add((entry.Item1, tokenizer.Scores[id], entry.Item2));
        }
        return pieces;
    }

    /// <summary>Writes a BPE SentencePiece model. <paramref name="escapeWhitespaces"/>: pieces use
    /// U+2581 for spaces (SentencePiece, GGUF llama vocabularies) rather than ' ' (llama2.c).</summary>
    public static void Write(IReadOnlyList<(string Piece, float Score, PieceType Type)> pieces, bool escapeWhitespaces, int unkId, int bosId, int eosId, Stream destination)
    {
        var output = new CodedOutputStream(destination, leaveOpen: true);
        foreach (var (piece, score, type) in pieces)
        {
            var message = new MemoryStream();
            var inner = new CodedOutputStream(message, leaveOpen: true);
            inner.WriteTag(1, WireFormat.WireType.LengthDelimited); inner.WriteString(piece);
            inner.WriteTag(2, WireFormat.WireType.Fixed32); inner.WriteFloat(score);
            inner.WriteTag(3, WireFormat.WireType.Varint); inner.WriteEnum((int)type);
            inner.Flush();
            output.WriteTag(1, WireFormat.WireType.LengthDelimited);
            output.WriteBytes(ByteString.CopyFrom(message.ToArray()));
        }

        var trainer = new MemoryStream();
        var t = new CodedOutputStream(trainer, leaveOpen: true);
        t.WriteTag(3, WireFormat.WireType.Varint); t.WriteEnum(2);                  // model_type = BPE
        t.WriteTag(4, WireFormat.WireType.Varint); t.WriteInt32(pieces.Count);
        t.WriteTag(35, WireFormat.WireType.Varint); t.WriteBool(true);             // byte_fallback
        t.WriteTag(40, WireFormat.WireType.Varint); t.WriteInt32(unkId);
        t.WriteTag(41, WireFormat.WireType.Varint); t.WriteInt32(bosId);
        t.WriteTag(42, WireFormat.WireType.Varint); t.WriteInt32(eosId);
        t.WriteTag(43, WireFormat.WireType.Varint); t.WriteInt32(-1);              // pad_id: none
        t.Flush();
        output.WriteTag(2, WireFormat.WireType.LengthDelimited);
        output.WriteBytes(ByteString.CopyFrom(trainer.ToArray()));

        var normalizer = new MemoryStream();
        var n = new CodedOutputStream(normalizer, leaveOpen: true);
        n.WriteTag(1, WireFormat.WireType.LengthDelimited); n.WriteString("identity");
        n.WriteTag(3, WireFormat.WireType.Varint); n.WriteBool(true);              // add_dummy_prefix
        n.WriteTag(4, WireFormat.WireType.Varint); n.WriteBool(false);             // remove_extra_whitespaces
        n.WriteTag(5, WireFormat.WireType.Varint); n.WriteBool(escapeWhitespaces);
        n.Flush();
        output.WriteTag(3, WireFormat.WireType.LengthDelimited);
        output.WriteBytes(ByteString.CopyFrom(normalizer.ToArray()));
        output.Flush();
    }
}
