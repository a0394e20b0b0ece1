// The bounds that keep a hostile template from costing unbounded stack, time or memory. Parsing is
// linear in the source and refuses nesting deeper than MaxNesting (Python's own parser stops at 200
// nested brackets). Rendering runs on a budget: every statement, expression, loop iteration and element
// a value walk visits is a step; every character or item an operation reads or creates is charged to
// the work count; no string grows past MaxStringLength; runtime nesting (blocks, expressions, macro
// calls, filters inside map) stops at MaxRenderDepth. Each limit fails with a ChatTemplateException that
// names the line and column, never a stack overflow or an allocation the size of the machine.
// The budget of the render in progress is thread-static: a render runs synchronously on one thread,
// and the value helpers (Values, Builtins) charge it without every call passing it along.
using System.Runtime.CompilerServices;

namespace VteKernels.Text.Jinja;

/// <summary>The caps of the template language (documented in the README's guarantees section).</summary>
internal static class TemplateLimits
{
    /// <summary>Deepest nesting of blocks, brackets and operators the parser accepts, and the greatest
    /// height of one expression's tree.</summary>
    public const int MaxNesting = 200;

    /// <summary>Deepest runtime nesting (statements and expressions being evaluated, macro calls included).</summary>
    public const int MaxRenderDepth = 1000;

    /// <summary>Statements, expressions, loop iterations and value elements one render may visit.</summary>
    public const long MaxSteps = 2_000_000;

    /// <summary>Characters and items one render may read or create in string, list and dict operations.</summary>
    public const long MaxWork = 256L << 20;

    /// <summary>Longest string (the output included) a render may build, in UTF-16 units.</summary>
    public const int MaxStringLength = 64 << 20;

    /// <summary>Deepest nesting of a value (lists in lists, ...) that printing, comparing or tojson walk.</summary>
    public const int MaxValueDepth = 500;
}

/// <summary>The budget of the render in progress on this thread (none outside a render: then nothing is counted).</summary>
internal sealed class RenderBudget
{
    [ThreadStatic] private static RenderBudget? _current;

    private long _steps, _work;
    private int _depth;

    /// <summary>The budget of the render running on this thread, or null.</summary>
    public static RenderBudget? Current => _current;

    /// <summary>Installs a fresh budget for the duration of a render; dispose to restore the previous one.</summary>
    public static Scope Begin()
    {
        var previous = _current;
        _current = new RenderBudget();
        return new Scope(previous);
    }

    /// <summary>Restores the budget that was current before <see cref="Begin"/>.</summary>
    public readonly struct Scope(RenderBudget? previous) : IDisposable
    {
        public void Dispose() => _current = previous;
    }

    /// <summary>Counts one step of the current render.</summary>
    public static void Step()
    {
        var b = _current;
        if (b is not null && ++b._steps > TemplateLimits.MaxSteps)
            throw new TemplateError($"the template takes more than {TemplateLimits.MaxSteps} steps to render");
    }

    /// <summary>Charges <paramref name="units"/> characters or items read or created to the current render.</summary>
    public static void Charge(long units)
    {
        var b = _current;
        if (b is null || units <= 0) return;
        b._work += units;
        if (b._work > TemplateLimits.MaxWork || b._work < 0)
            throw new TemplateError($"the template reads or builds more than {TemplateLimits.MaxWork} characters and items to render");
    }

    /// <summary>a x b for non-negative a and b, saturating at long.MaxValue.</summary>
    public static long Product(long a, long b)
    {
        var p = (Int128)a * b;
        return p > long.MaxValue ? long.MaxValue : (long)p;
    }

    /// <summary>Throws unless a string of <paramref name="length"/> units may be built.</summary>
    public static void CheckLength(long length)
    {
        if (length > TemplateLimits.MaxStringLength || length < 0)
            throw new TemplateError($"a string of {length} characters is longer than the {TemplateLimits.MaxStringLength} a template may build");
    }

    /// <summary>Enters one level of runtime nesting; dispose the result to leave it.</summary>
    public static Level Enter()
    {
        var b = _current;
        if (b is not null && ++b._depth > TemplateLimits.MaxRenderDepth)
        {
            b._depth--;
            throw new TemplateError($"the template nests deeper than {TemplateLimits.MaxRenderDepth} levels while rendering (recursive macros?)");
        }
        if (!RuntimeHelpers.TryEnsureSufficientExecutionStack())
        {
            if (b is not null) b._depth--;
            throw new TemplateError("the template nests too deeply for the stack of this thread");
        }
        return new Level(b);
    }

    /// <summary>One level of runtime nesting.</summary>
    public readonly struct Level(RenderBudget? budget) : IDisposable
    {
        public void Dispose()
        {
            if (budget is not null) budget._depth--;
        }
    }
}
