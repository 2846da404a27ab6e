"""A stand-in for stderr in the progress tests: a text buffer that says whether it is a terminal
(the progress bars draw only on one)."""
import io


class Terminal(io.StringIO):
    def __init__(self, tty=True):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty

    @property
    def text(self):
        return self.getvalue()
