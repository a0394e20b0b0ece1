// Recursive-descent parser from tokens to the syntax tree, with Jinja's operator precedence (loosest first):
//   a if c else b  <  or  <  and  <  not  <  comparisons, in, not in  <  + -  <  ~  <  * / // %  <  **
//   <  unary - +  <  primary with .attr [key] [a:b:c] (call), then | filter and "is" test.
// So "messages|length - 1" is (messages|length) - 1, and "not x is defined" is not (x is defined).
// Tags it knows but does not implement (raw, filter, call, include, import, extends, block, with, do, ...)
// and anything malformed raise ChatTemplateException naming the construct and its line and column.
// Bounds: nesting (blocks, brackets, unary operators, conditional chains) deeper than
// TemplateLimits.MaxNesting, and an expression tree higher than that (left-deep chains such as
// a + 1 + 1 ... or x|trim|trim ... are built without recursion but walked recursively later), are
// refused with the position; time and memory are linear in the source (adjacent string literals are
// joined in one builder).
using System.Globalization;
using System.Runtime.CompilerServices;
using System.Text;

namespace VteKernels.Text.Jinja;

internal sealed class Parser
{
    private static readonly HashSet<string> UnsupportedTags = new(StringComparer.Ordinal)
    {
        "raw", "filter", "call", "include", "import", "from", "extends", "block", "with", "do", "autoescape", "trans", "pluralize",
    };

    private readonly string _src;
    private readonly List<Token> _tokens;
    private int _i;
    private int _nesting;

    private Parser(string src, List<Token> tokens)
    {
        _src = src;
        _tokens = tokens;
    }

    /// <summary>Parses a normalised template source into its top-level statements.</summary>
    /// <exception cref="ChatTemplateException">A syntax error or an unsupported construct.</exception>
    public static IReadOnlyList<Node> Parse(string normalizedSource)
    {
        var parser = new Parser(normalizedSource, Lexer.Tokenize(normalizedSource));
        return parser.ParseBody([], out _);
    }

    private Token Cur => _tokens[_i];

    // One level of recursion in the parser (a nested block, bracket, unary operator or else-branch).
    private Nested Nest()
    {
        if (++_nesting > TemplateLimits.MaxNesting)
            throw Error(Cur, $"the template nests deeper than {TemplateLimits.MaxNesting} levels (blocks, brackets and operators)");
        if (!RuntimeHelpers.TryEnsureSufficientExecutionStack())
            throw Error(Cur, "the template nests too deeply for the stack of this thread");
        return new Nested(this);
    }

    private readonly struct Nested(Parser parser) : IDisposable
    {
        public void Dispose() => parser._nesting--;
    }

    // An expression tree too high to walk recursively is refused where it starts.
    private Expr Bounded(Expr e)
    {
        if (e.Depth > TemplateLimits.MaxNesting)
            throw Lexer.Error(_src, e.Offset, $"expression nests deeper than {TemplateLimits.MaxNesting} levels (operators, filters, calls and brackets chained)");
        return e;
    }

    // The body of a nested block, up to one of its end tags.
    private List<Node> ParseNestedBody(string[] ends, out string endTag)
    {
        using var _ = Nest();
        return ParseBody(ends, out endTag);
    }

    private Token Peek(int ahead) => _tokens[Math.Min(_i + ahead, _tokens.Count - 1)];

    private ChatTemplateException Error(Token at, string problem) => Lexer.Error(_src, at.Offset, problem);

    private bool IsName(string name) => Cur.Kind == TokenKind.Name && Cur.Value == name;

    private bool IsOp(string op) => Cur.Kind == TokenKind.Operator && Cur.Value == op;

    private bool SkipName(string name)
    {
        if (!IsName(name)) return false;
        _i++;
        return true;
    }

    private bool SkipOp(string op)
    {
        if (!IsOp(op)) return false;
        _i++;
        return true;
    }

    private void ExpectOp(string op)
    {
        if (!SkipOp(op)) throw Error(Cur, $"expected '{op}', found {Describe(Cur)}");
    }

    private string ExpectName(string what)
    {
        if (Cur.Kind != TokenKind.Name) throw Error(Cur, $"expected {what}, found {Describe(Cur)}");
        return _tokens[_i++].Value;
    }

    private void ExpectStmtClose(string tag)
    {
        if (Cur.Kind != TokenKind.StmtClose) throw Error(Cur, $"expected '%}}' to end '{{% {tag} %}}', found {Describe(Cur)}");
        _i++;
    }

    private static string Describe(Token t) => t.Kind switch
    {
        TokenKind.End => "the end of the template",
        TokenKind.Text => "template text",
        TokenKind.String => $"string '{t.Value}'",
        TokenKind.StmtClose or TokenKind.ExprClose or TokenKind.StmtOpen or TokenKind.ExprOpen or TokenKind.Operator => $"'{t.Value}'",
        _ => $"'{t.Value}'",
    };

    // Statements until one of the end tags (the tag name is consumed with its "{%"; the caller reads the rest).
    private List<Node> ParseBody(string[] ends, out string endTag)
    {
        var body = new List<Node>();
        while (true)
        {
            var tok = Cur;
            switch (tok.Kind)
            {
                case TokenKind.End:
                    if (ends.Length > 0) throw Error(tok, $"missing '{{% {ends[^1]} %}}' before the end of the template");
                    endTag = "";
                    return body;
                case TokenKind.Text:
                    body.Add(new TextNode(tok.Value, tok.Offset));
                    _i++;
                    break;
                case TokenKind.ExprOpen:
                    _i++;
                    var value = ParseTupleOrExpression();
                    if (Cur.Kind != TokenKind.ExprClose) throw Error(Cur, $"expected '}}}}' to end the expression, found {Describe(Cur)}");
                    _i++;
                    body.Add(new OutputNode(value, tok.Offset));
                    break;
                case TokenKind.StmtOpen:
                    var name = Peek(1);
                    if (name.Kind == TokenKind.Name && Array.IndexOf(ends, name.Value) >= 0)
                    {
                        _i += 2;
                        endTag = name.Value;
                        return body;
                    }
                    _i++;
                    body.AddRange(ParseStatement(tok));
                    break;
                default:
                    throw Error(tok, $"unexpected {Describe(tok)}");
            }
        }
    }

    private List<Node> ParseStatement(Token open)
    {
        var tok = Cur;
        if (tok.Kind != TokenKind.Name) throw Error(tok, $"expected a tag name after '{{%', found {Describe(tok)}");
        _i++;
        switch (tok.Value)
        {
            case "if": return [ParseIf(open)];
            case "for": return [ParseFor(open)];
            case "set": return [ParseSet(open)];
            case "macro": return [ParseMacro(open)];
            case "break":
                ExpectStmtClose("break");
                return [new BreakNode(open.Offset)];
            case "continue":
                ExpectStmtClose("continue");
                return [new ContinueNode(open.Offset)];
            case "generation":
                // transformers' {% generation %} marks assistant text for masks; it renders its body unchanged.
                ExpectStmtClose("generation");
                var body = ParseNestedBody(["endgeneration"], out _);
                ExpectStmtClose("endgeneration");
                return body;
            default:
                if (UnsupportedTags.Contains(tok.Value))
                    throw Error(tok, $"unsupported tag '{{% {tok.Value} %}}' (supported: if, for, set, macro, break, continue, generation)");
                if (tok.Value.StartsWith("end", StringComparison.Ordinal) || tok.Value is "elif" or "else")
                    throw Error(tok, $"unexpected '{{% {tok.Value} %}}' with no open block it could close");
                throw Error(tok, $"unknown tag '{{% {tok.Value} %}}'");
        }
    }

    private IfNode ParseIf(Token open)
    {
        var branches = new List<(Expr, IReadOnlyList<Node>)>();
        IReadOnlyList<Node>? otherwise = null;
        string tag = "if";
        while (true)
        {
            var condition = ParseExpression();
            ExpectStmtClose(tag);
            var body = ParseNestedBody(["elif", "else", "endif"], out var end);
            branches.Add((condition, body));
            if (end == "elif") { tag = "elif"; continue; }
            if (end == "else")
            {
                ExpectStmtClose("else");
                otherwise = ParseNestedBody(["endif"], out _);
            }
            ExpectStmtClose("endif");
            return new IfNode(branches, otherwise, open.Offset);
        }
    }

    private ForNode ParseFor(Token open)
    {
        var target = ParseTarget(allowAttribute: false);
        if (!SkipName("in")) throw Error(Cur, $"expected 'in' in '{{% for %}}', found {Describe(Cur)}");
        var iterable = ParseTupleOrExpression(conditional: false);
        Expr? filter = null;
        if (SkipName("if")) filter = ParseExpression();
        if (IsName("recursive")) throw Error(Cur, "unsupported construct: recursive for loops");
        ExpectStmtClose("for");
        var body = ParseNestedBody(["else", "endfor"], out var end);
        IReadOnlyList<Node>? otherwise = null;
        if (end == "else")
        {
            ExpectStmtClose("else");
            otherwise = ParseNestedBody(["endfor"], out _);
        }
        ExpectStmtClose("endfor");
        return new ForNode(target, iterable, filter, body, otherwise, open.Offset);
    }

    private Node ParseSet(Token open)
    {
        var target = ParseTarget(allowAttribute: true);
        if (SkipOp("="))
        {
            var value = ParseTupleOrExpression();
            ExpectStmtClose("set");
            return new SetNode(target, value, open.Offset);
        }
        if (IsOp("|")) throw Error(Cur, "unsupported construct: filtered block set ({% set x | filter %})");
        ExpectStmtClose("set");
        var body = ParseNestedBody(["endset"], out _);
        ExpectStmtClose("endset");
        return new SetBlockNode(target, body, open.Offset);
    }

    private MacroNode ParseMacro(Token open)
    {
        var name = ExpectName("a macro name");
        ExpectOp("(");
        var parameters = new List<(string, Expr?)>();
        while (!IsOp(")"))
        {
            if (parameters.Count > 0) ExpectOp(",");
            if (IsOp(")")) break;
            var p = ExpectName("a parameter name");
            Expr? dflt = SkipOp("=") ? ParseExpression() : null;
            parameters.Add((p, dflt));
        }
        ExpectOp(")");
        ExpectStmtClose("macro");
        var body = ParseNestedBody(["endmacro"], out _);
        if (Cur.Kind == TokenKind.Name) _i++; // {% endmacro name %}
        ExpectStmtClose("endmacro");
        return new MacroNode(name, parameters, body, open.Offset);
    }

    // name | name.attr (set only) | a, b | (a, b)
    private Target ParseTarget(bool allowAttribute)
    {
        int offset = Cur.Offset;
        bool paren = SkipOp("(");
        var names = new List<NameTarget>();
        while (true)
        {
            var nameTok = Cur;
            var name = ExpectName("a variable name");
            if (allowAttribute && !paren && names.Count == 0 && SkipOp("."))
            {
                var attr = ExpectName("an attribute name");
                return new AttrTarget(name, attr, offset);
            }
            names.Add(new NameTarget(name, nameTok.Offset));
            if (!SkipOp(",")) break;
            if (Cur.Kind != TokenKind.Name) break; // trailing comma
        }
        if (paren) ExpectOp(")");
        return names.Count == 1 && !paren ? names[0] : new TupleTarget(names, offset);
    }

    // expr or a bare tuple "a, b" (in {{ }}, set values and for iterables).
    private Expr ParseTupleOrExpression(bool conditional = true)
    {
        int offset = Cur.Offset;
        var first = ParseExpression(conditional);
        if (!IsOp(",")) return first;
        var items = new List<Expr> { first };
        while (SkipOp(","))
        {
            if (Cur.Kind is TokenKind.ExprClose or TokenKind.StmtClose || IsName("if")) break;
            items.Add(ParseExpression(conditional));
        }
        return Bounded(new TupleExpr(items, offset));
    }

    private Expr ParseExpression(bool conditional = true) => Bounded(conditional ? ParseConditional() : ParseOr());

    private Expr ParseConditional()
    {
        var expr = ParseOr();
        while (IsName("if"))
        {
            int offset = Cur.Offset;
            _i++;
            var condition = ParseOr();
            Expr? otherwise = null;
            if (SkipName("else"))
            {
                using var _ = Nest();
                otherwise = ParseConditional();
            }
            expr = new ConditionalExpr(condition, expr, otherwise, offset);
        }
        return expr;
    }

    private Expr ParseOr()
    {
        using var _ = Nest();
        var left = ParseAnd();
        while (IsName("or"))
        {
            int offset = Cur.Offset;
            _i++;
            left = new BinaryExpr("or", left, ParseAnd(), offset);
        }
        return left;
    }

    private Expr ParseAnd()
    {
        var left = ParseNot();
        while (IsName("and"))
        {
            int offset = Cur.Offset;
            _i++;
            left = new BinaryExpr("and", left, ParseNot(), offset);
        }
        return left;
    }

    private Expr ParseNot()
    {
        if (IsName("not"))
        {
            int offset = Cur.Offset;
            _i++;
            using var _ = Nest();
            return new UnaryExpr("not", ParseNot(), offset);
        }
        return ParseCompare();
    }

    private Expr ParseCompare()
    {
        int offset = Cur.Offset;
        var first = ParseMath1();
        var rest = new List<(string, Expr)>();
        while (true)
        {
            if (Cur.Kind == TokenKind.Operator && Cur.Value is "==" or "!=" or "<" or ">" or "<=" or ">=")
            {
                var op = Cur.Value;
                _i++;
                rest.Add((op, ParseMath1()));
            }
            else if (IsName("in"))
            {
                _i++;
                rest.Add(("in", ParseMath1()));
            }
            else if (IsName("not") && Peek(1).Kind == TokenKind.Name && Peek(1).Value == "in")
            {
                _i += 2;
                rest.Add(("not in", ParseMath1()));
            }
            else break;
        }
        return rest.Count == 0 ? first : new CompareExpr(first, rest, offset);
    }

    private Expr ParseMath1()
    {
        var left = ParseConcat();
        while (Cur.Kind == TokenKind.Operator && Cur.Value is "+" or "-")
        {
            var op = Cur;
            _i++;
            left = new BinaryExpr(op.Value, left, ParseConcat(), op.Offset);
        }
        return left;
    }

    private Expr ParseConcat()
    {
        var left = ParseMath2();
        while (IsOp("~"))
        {
            int offset = Cur.Offset;
            _i++;
            left = new BinaryExpr("~", left, ParseMath2(), offset);
        }
        return left;
    }

    private Expr ParseMath2()
    {
        var left = ParsePow();
        while (Cur.Kind == TokenKind.Operator && Cur.Value is "*" or "/" or "//" or "%")
        {
            var op = Cur;
            _i++;
            left = new BinaryExpr(op.Value, left, ParsePow(), op.Offset);
        }
        return left;
    }

    private Expr ParsePow()
    {
        var left = ParseUnary(withFilter: true);
        while (IsOp("**"))
        {
            int offset = Cur.Offset;
            _i++;
            left = new BinaryExpr("**", left, ParseUnary(withFilter: true), offset);
        }
        return left;
    }

    private Expr ParseUnary(bool withFilter)
    {
        var tok = Cur;
        Expr node;
        if (IsOp("-") || IsOp("+"))
        {
            _i++;
            using var _ = Nest();
            node = new UnaryExpr(tok.Value, ParseUnary(withFilter: false), tok.Offset);
        }
        else node = ParsePrimary();
        node = ParsePostfix(node);
        return withFilter ? ParseFilterAndTest(node) : node;
    }

    private Expr ParsePrimary()
    {
        var tok = Cur;
        switch (tok.Kind)
        {
            case TokenKind.Name:
                _i++;
                return tok.Value switch
                {
                    "true" or "True" => new LiteralExpr(true, tok.Offset),
                    "false" or "False" => new LiteralExpr(false, tok.Offset),
                    "none" or "None" => new LiteralExpr(null, tok.Offset),
                    _ => new NameExpr(tok.Value, tok.Offset),
                };
            case TokenKind.String:
                _i++;
                if (Cur.Kind != TokenKind.String) return new LiteralExpr(tok.Value, tok.Offset);
                var text = new StringBuilder(tok.Value); // 'a' 'b' is 'ab'
                while (Cur.Kind == TokenKind.String) text.Append(_tokens[_i++].Value);
                return new LiteralExpr(text.ToString(), tok.Offset);
            case TokenKind.Integer:
                _i++;
                if (!long.TryParse(tok.Value, NumberStyles.None, CultureInfo.InvariantCulture, out long l))
                    throw Error(tok, $"integer literal {tok.Value} does not fit 64 bits");
                return new LiteralExpr(l, tok.Offset);
            case TokenKind.Float:
                _i++;
                return new LiteralExpr(double.Parse(tok.Value, NumberStyles.Float, CultureInfo.InvariantCulture), tok.Offset);
            case TokenKind.Operator when tok.Value == "(":
                _i++;
                if (SkipOp(")")) return new TupleExpr([], tok.Offset);
                var first = ParseExpression();
                if (SkipOp(")")) return first;
                var items = new List<Expr> { first };
                while (SkipOp(","))
                {
                    if (IsOp(")")) break;
                    items.Add(ParseExpression());
                }
                ExpectOp(")");
                return new TupleExpr(items, tok.Offset);
            case TokenKind.Operator when tok.Value == "[":
                _i++;
                var list = new List<Expr>();
                while (!IsOp("]"))
                {
                    if (list.Count > 0) ExpectOp(",");
                    if (IsOp("]")) break;
                    list.Add(ParseExpression());
                }
                ExpectOp("]");
                return new ListExpr(list, tok.Offset);
            case TokenKind.Operator when tok.Value == "{":
                _i++;
                var pairs = new List<(Expr, Expr)>();
                while (!IsOp("}"))
                {
                    if (pairs.Count > 0) ExpectOp(",");
                    if (IsOp("}")) break;
                    var key = ParseExpression();
                    ExpectOp(":");
                    pairs.Add((key, ParseExpression()));
                }
                ExpectOp("}");
                return new DictExpr(pairs, tok.Offset);
            default:
                throw Error(tok, $"expected an expression, found {Describe(tok)}");
        }
    }

    private Expr ParsePostfix(Expr node)
    {
        while (true)
        {
            var tok = Cur;
            if (IsOp("."))
            {
                _i++;
                if (Cur.Kind == TokenKind.Integer)
                {
                    // x.0 is x[0]; an index past 64 bits names no item (Python would look up a big integer).
                    if (!long.TryParse(Cur.Value, NumberStyles.None, CultureInfo.InvariantCulture, out long index))
                        throw Error(Cur, $"index .{Cur.Value} does not fit 64 bits");
                    _i++;
                    node = new ItemExpr(node, new LiteralExpr(index, tok.Offset), tok.Offset);
                }
                else
                    node = new AttrExpr(node, ExpectName("an attribute name after '.'"), tok.Offset);
            }
            else if (IsOp("["))
            {
                _i++;
                node = ParseSubscript(node, tok);
            }
            else if (IsOp("("))
            {
                _i++;
                node = new CallExpr(node, ParseArguments(), tok.Offset);
            }
            else return node;
        }
    }

    // After "[": x[key] or x[start:stop:step] with any part omitted.
    private Expr ParseSubscript(Expr obj, Token open)
    {
        Expr? start = null;
        if (!IsOp(":"))
        {
            start = ParseExpression();
            if (SkipOp("]")) return new ItemExpr(obj, start, open.Offset);
            if (IsOp(",")) throw Error(Cur, "unsupported construct: tuple subscripts (x[a, b])");
        }
        ExpectOp(":");
        Expr? stop = IsOp(":") || IsOp("]") ? null : ParseExpression();
        Expr? step = null;
        if (SkipOp(":") && !IsOp("]")) step = ParseExpression();
        ExpectOp("]");
        return new SliceExpr(obj, start, stop, step, open.Offset);
    }

    // After "(": positional and name=value arguments up to ")".
    private Arguments ParseArguments()
    {
        var positional = new List<Expr>();
        var keyword = new List<(string, Expr)>();
        while (!IsOp(")"))
        {
            if (positional.Count + keyword.Count > 0) ExpectOp(",");
            if (IsOp(")")) break;
            if (IsOp("*") || IsOp("**")) throw Error(Cur, "unsupported construct: *args / **kwargs in a call");
            if (Cur.Kind == TokenKind.Name && Peek(1).Kind == TokenKind.Operator && Peek(1).Value == "=")
            {
                var name = Cur.Value;
                _i += 2;
                keyword.Add((name, ParseExpression()));
            }
            else
            {
                if (keyword.Count > 0) throw Error(Cur, "positional argument after a keyword argument");
                positional.Add(ParseExpression());
            }
        }
        ExpectOp(")");
        return new Arguments(positional, keyword);
    }

    private Expr ParseFilterAndTest(Expr node)
    {
        while (true)
        {
            var tok = Cur;
            if (IsOp("|"))
            {
                _i++;
                var name = ExpectName("a filter name after '|'");
                if (!Builtins.IsFilter(name))
                    throw Error(_tokens[_i - 1], $"unsupported filter '{name}' (supported: {string.Join(", ", Builtins.Filters)})");
                var args = SkipOp("(") ? ParseArguments() : Arguments.None;
                node = new FilterExpr(node, name, args, tok.Offset);
            }
            else if (IsName("is"))
            {
                _i++;
                bool negated = SkipName("not");
                var name = ExpectName("a test name after 'is'");
                if (!Builtins.IsTest(name))
                    throw Error(_tokens[_i - 1], $"unsupported test 'is {name}' (supported: {string.Join(", ", Builtins.Tests)})");
                Arguments args;
                if (SkipOp("(")) args = ParseArguments();
                else if (StartsBareTestArgument())
                {
                    // "x is divisibleby 3", "x is sameas false": one argument without parentheses.
                    var arg = ParsePostfix(ParsePrimary());
                    args = new Arguments([arg], []);
                }
                else args = Arguments.None;
                node = new TestExpr(node, name, args, negated, tok.Offset);
            }
            else if (IsOp("("))
            {
                _i++;
                node = new CallExpr(node, ParseArguments(), tok.Offset);
            }
            else return node;
        }
    }

    private bool StartsBareTestArgument()
    {
        var t = Cur;
        return t.Kind switch
        {
            TokenKind.Name => t.Value is not ("else" or "or" or "and" or "if" or "is" or "in" or "not"),
            TokenKind.String or TokenKind.Integer or TokenKind.Float => true,
            TokenKind.Operator => t.Value is "[" or "{",
            _ => false,
        };
    }
}
