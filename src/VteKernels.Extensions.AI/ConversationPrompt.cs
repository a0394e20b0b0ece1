// From Microsoft.Extensions.AI chat messages to the engine's PromptInput. Text parts are joined per message;
// images (DataContent with bytes or a data: URI, or file:// UriContent when allowed) go through our own
// decoders and CLIP preprocessing, in message order, and each user message carries its own images, placed
// before its text as LLaVA's processors place them. The text is rendered with the model's chat template, or
// in LLaVA-1.5's / Vicuna-v1's fixed format with the images in the turn they came in.
using Microsoft.Extensions.AI;
using VteKernels.Engine;
using VteKernels.Imaging;
using VteKernels.Models;
using VteKernels.Text;
using TextMessage = VteKernels.Text.ChatMessage;

namespace VteKernels.Extensions.AI;

/// <summary>One message after reading its contents.</summary>
internal sealed record ReadMessage(string Role, string Text, IReadOnlyList<ImageInput> Images);

internal sealed class ConversationPrompt(LlavaConfig config, Tokenizer tokenizer, ClipOptions clip, PromptStyle style, ChatTemplate? template, bool allowFileUris)
{
    /// <summary>Builds the whole prompt of <paramref name="messages"/>, preceded by <paramref name="instructions"/> as a system message.</summary>
    /// <exception cref="InvalidInputException">An empty conversation, one that does not end with a user message, a role or
    /// content the engine cannot take, or an image that does not fit.</exception>
    /// <exception cref="ContextLengthException">The images alone take more tokens than the context holds.</exception>
    /// <exception cref="ImageFormatException">An image's bytes are not a supported image.</exception>
    /// <exception cref="NotSupportedException">A remote image URL, or a file URL when they are not allowed.</exception>
    public PromptInput Build(IEnumerable<Microsoft.Extensions.AI.ChatMessage> messages, string? instructions)
    {
        var list = messages.ToList();
        int imageParts = list.Sum(m => m.Contents.Count(c => c is DataContent or UriContent));
        long imageTokens = (long)imageParts * config.TokensPerImage;
        if (imageTokens > config.Text.MaxPositionEmbeddings)
            throw new ContextLengthException((int)Math.Min(imageTokens, int.MaxValue), config.Text.MaxPositionEmbeddings, $"{imageParts} images take {imageTokens} tokens, more than the model's context of {config.Text.MaxPositionEmbeddings} tokens");
        var read = new List<ReadMessage>();
        if (!string.IsNullOrEmpty(instructions)) read.Add(new ReadMessage("system", instructions, []));
        for (int i = 0; i < list.Count; i++) read.Add(Read(list[i], i));
        if (read.Count == 0) throw new InvalidInputException("the conversation has no messages");
        if (read[^1].Role != "user") throw new InvalidInputException($"the conversation must end with a user message (the last is {read[^1].Role})");
        var images = read.SelectMany(m => m.Images).ToList();
        var (text, special) = style == PromptStyle.Template ? RenderTemplate(read) : (RenderFixed(read, style), true);
        return MultimodalPrompt.Build(config, tokenizer, text, images, special);
    }

    private ReadMessage Read(Microsoft.Extensions.AI.ChatMessage message, int index)
    {
        string role = message.Role == ChatRole.User ? "user" : message.Role == ChatRole.Assistant ? "assistant"
            : message.Role == ChatRole.System ? "system"
            : throw new InvalidInputException($"message {index}: role '{message.Role}' is not supported (system, user and assistant are)");
        var text = new System.Text.StringBuilder();
        var images = new List<ImageInput>();
        foreach (var content in message.Contents)
        {
            switch (content)
            {
                case TextContent t:
                    text.Append(t.Text);
                    break;
                case DataContent d when d.HasTopLevelMediaType("image"):
                    images.Add(Decode(d.Data.Span, index, images.Count));
                    break;
                case DataContent d:
                    throw new InvalidInputException($"message {index}: data of type '{d.MediaType}' is not supported (text and images are)");
                case UriContent u:
                    images.Add(FromUri(u.Uri, index, images.Count));
                    break;
                case UsageContent or TextReasoningContent when role == "assistant":
                    break;   // parts of an earlier answer that carry no prompt text
                default:
                    throw new InvalidInputException($"message {index}: content of type {content.GetType().Name} is not supported (text and images are)");
            }
        }
        if (images.Count > 0 && role != "user")
            throw new InvalidInputException($"message {index}: images go in user messages, not in a {role} message");
        return new ReadMessage(role, text.ToString(), images);
    }

    private ImageInput Decode(ReadOnlySpan<byte> bytes, int message, int image)
    {
        if (bytes.IsEmpty) throw new InvalidInputException($"message {message}, image {image}: the image is empty");
        var input = ClipPreprocessor.ToImageInput(ImageDecoder.Decode(bytes), clip);
        if (input.Height != config.Vision.ImageSize || input.Width != config.Vision.ImageSize)
            throw new InvalidInputException($"message {message}, image {image}: preprocesses to {input.Width}x{input.Height} but the vision tower takes {config.Vision.ImageSize}x{config.Vision.ImageSize} (check preprocessor_config.json)");
        return input;
    }

    private ImageInput FromUri(Uri uri, int message, int image)
    {
        if (!uri.IsAbsoluteUri || !uri.IsFile)
            throw new NotSupportedException($"message {message}, image {image}: image URLs ({(uri.IsAbsoluteUri ? uri.Scheme : "relative")}) are not fetched; send the image itself (bytes, or a data: URI)");
        if (!allowFileUris)
            throw new NotSupportedException($"message {message}, image {image}: file URLs are not allowed here (send the image itself, or enable file URLs)");
        var path = uri.LocalPath;
        if (!File.Exists(path)) throw new InvalidInputException($"message {message}, image {image}: file '{path}' does not exist");
        try
        {
            return Decode(File.ReadAllBytes(path), message, image);
        }
        catch (ImageFormatException e) when (e.FilePath is null)
        {
            throw e.WithFile(path);
        }
    }

    private (string Text, bool AddSpecialTokens) RenderTemplate(IReadOnlyList<ReadMessage> messages)
    {
        if (template is null)
            throw new InvalidInputException("the model has no chat template (chat_template.jinja, chat_template.json or tokenizer_config.json); use the llava or vicuna prompt style");
        var text = template.Render(messages.Select(m => new TextMessage(m.Role, m.Text, m.Images.Count)).ToList(), addGenerationPrompt: true,
            new Dictionary<string, object?> { ["bos_token"] = tokenizer.BosToken ?? "", ["eos_token"] = tokenizer.EosToken ?? "" });
        // As MultimodalPrompt.Render: the tokenizer adds BOS unless the template wrote it.
        bool templateWroteBos = tokenizer.BosToken is { Length: > 0 } bos && text.StartsWith(bos, StringComparison.Ordinal);
        return (text, !templateWroteBos);
    }

    /// <summary>
    /// LLaVA-1.5's "USER: {images}{q} ASSISTANT: {a} USER: ..." or Vicuna-v1's "{system} USER: {images}{q} ASSISTANT: {a}&lt;/s&gt;USER: ...",
    /// exactly as <see cref="PromptFormat"/> writes them, with each turn's images in that turn. Consecutive messages of one
    /// role are joined with a newline; a system message replaces Vicuna's system prompt (LLaVA-1.5's format puts it first).
    /// </summary>
    internal static string RenderFixed(IReadOnlyList<ReadMessage> messages, PromptStyle style)
    {
        bool vicuna = style == PromptStyle.VicunaV1;
        var system = string.Join("\n", messages.Where(m => m.Role == "system").Select(m => m.Text));
        var turns = new List<(string Role, string Text, int Images)>();
        foreach (var m in messages.Where(m => m.Role != "system"))
        {
            var images = string.Concat(Enumerable.Repeat(PromptFormat.ImageToken + "\n", m.Images.Count));
            if (turns.Count > 0 && turns[^1].Role == m.Role)
                turns[^1] = (m.Role, turns[^1].Text + "\n" + images + m.Text, turns[^1].Images + m.Images.Count);
            else
                turns.Add((m.Role, images + m.Text, m.Images.Count));
        }
        if (turns.Count > 0 && turns[0].Role != "user") throw new InvalidInputException("the conversation must start with a user message (after any system message)");
        var sb = new System.Text.StringBuilder();
        if (vicuna) sb.Append(system.Length > 0 ? system : PromptFormat.VicunaV1System).Append(' ');
        else if (system.Length > 0) sb.Append(system).Append(' ');
        foreach (var (role, text, _) in turns)
        {
            if (role == "user") sb.Append("USER: ").Append(text).Append(" ASSISTANT:");
            else sb.Append(' ').Append(text).Append(vicuna ? "</s>" : " ");
        }
        return sb.ToString();
    }
}
