// Entry point of the `vte` command-line tool. It has no commands yet: it prints a usage line and exits
// with status 2 so that scripts calling it notice.
Console.Error.WriteLine("usage: vte <command> [options]   (no commands are available in this build)");
return 2;
