package admincli

import (
	"errors"
	"fmt"
	"io"
	"strings"
)

const maxLine = 4096

// readLine reads one line of stdin without its line end.
func (inv *invocation) readLine(what string) (string, error) {
	line, err := inv.in.ReadString('\n')
	if err != nil && !(errors.Is(err, io.EOF) && line != "") {
		if errors.Is(err, io.EOF) {
			return "", usagef("no %s on stdin", what)
		}
		return "", fmt.Errorf("reading %s: %w", what, err)
	}
	if len(line) > maxLine {
		return "", usagef("the %s on stdin is longer than %d bytes", what, maxLine)
	}
	return strings.TrimRight(line, "\r\n"), nil
}

// ask reads a line, after a prompt on stderr when stdin is a terminal.
func (inv *invocation) ask(prompt, what string) (string, error) {
	if inv.cli.Terminal() {
		fmt.Fprint(inv.stderr, prompt)
	}
	return inv.readLine(what)
}

// visible is said in every secret prompt: without a terminal library the
// CLI cannot turn echo off.
const visible = " (typing is visible; MAMORI_PASSWORD or a pipe on stdin avoid that): "

// askSecret reads a secret (password, code) after a prompt that says the
// typing is visible.
func (inv *invocation) askSecret(prompt, what string) (string, error) {
	s, err := inv.ask(prompt+visible, what)
	if err == nil && s == "" {
		return "", usagef("empty %s", what)
	}
	return s, err
}

// newPassword reads a password to set: the first line of stdin with
// --password-stdin, else at a terminal, typed twice. Never from a flag.
func (inv *invocation) newPassword(fromStdin bool, whose string) (string, error) {
	if fromStdin {
		pw, err := inv.readLine("password")
		if err == nil && pw == "" {
			return "", usagef("empty password on stdin")
		}
		return pw, err
	}
	if !inv.cli.Terminal() {
		return "", usagef("%s: give the password on stdin with --password-stdin (passwords are never flag values)", inv.name)
	}
	pw, err := inv.askSecret("New password for "+whose, "password")
	if err != nil {
		return "", err
	}
	again, err := inv.askSecret("Repeat the password", "password")
	if err != nil {
		return "", err
	}
	if pw != again {
		return "", usagef("the two passwords differ")
	}
	return pw, nil
}
