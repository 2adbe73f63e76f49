package main

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/iklimco/iklim/inventories"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/urfave/cli/v2"
)

// readmeRunID stands for the README's placeholder run id ID.
const readmeRunID = "2026-11-21T10-15-04Z"

type readmeCommand struct {
	line        int
	argv        []string // without the leading "iklim"
	placeholder bool     // names a placeholder such as NAME: parse only
}

// readme returns the README's commands (from sh blocks, from `source
// <(iklim …)`, and inline code spans with arguments), the environment its
// export lines set, and its HCL blocks by first line.
func readme(t *testing.T) (cmds []readmeCommand, env []string, hclBlocks map[int]string) {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "README.md"))
	require.NoError(t, err)
	defer f.Close()
	hclBlocks = map[int]string{}
	inline := regexp.MustCompile("`iklim ([^`]+)`")
	subshell := regexp.MustCompile(`<\(iklim ([^)]*)\)`)
	fence, start := "", 0
	var block strings.Builder
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "```") && fence == "":
			fence, start = strings.TrimPrefix(line, "```"), n+1
			block.Reset()
			continue
		case strings.HasPrefix(line, "```"):
			if fence == "hcl" {
				hclBlocks[start] = block.String()
			}
			fence = ""
			continue
		}
		switch fence {
		case "":
			for _, m := range inline.FindAllStringSubmatch(line, -1) {
				words := shellWords(t, m[1])
				if len(words) > 1 { // `iklim play` alone names the command
					cmds = append(cmds, readmeCommand{line: n, argv: words})
				}
			}
		case "hcl":
			block.WriteString(line + "\n")
		case "sh":
			words := shellWords(t, line)
			switch {
			case len(words) == 0:
			case words[0] == "iklim":
				cmds = append(cmds, readmeCommand{line: n, argv: words[1:]})
			case words[0] == "export":
				for _, kv := range words[1:] {
					env = append(env, strings.ReplaceAll(kv, "…", "readme-placeholder"))
				}
			case subshell.MatchString(line):
				cmds = append(cmds, readmeCommand{line: n, argv: shellWords(t, subshell.FindStringSubmatch(line)[1])})
			}
		}
	}
	require.NoError(t, sc.Err())
	// ID and RUN stand for a run id; another word in capitals (NAME, HOST)
	// is a placeholder too, and its command is only parsed.
	placeholder := regexp.MustCompile(`^[A-Z][A-Z_]+$`)
	for i := range cmds {
		for j, w := range cmds[i].argv {
			k, v, kv := strings.Cut(w, "=")
			if !kv {
				k, v = "", w
			}
			switch {
			case v == "ID" || v == "RUN":
				v = readmeRunID
			case placeholder.MatchString(v):
				cmds[i].placeholder = true
			}
			if kv {
				v = k + "=" + v
			}
			cmds[i].argv[j] = v
		}
	}
	return cmds, env, hclBlocks
}

// shellWords splits a line as sh does for what the README uses: single and
// double quotes, and a # comment after a blank.
func shellWords(t *testing.T, line string) []string {
	var words []string
	var cur strings.Builder
	inWord := false
	var quote rune
	for _, r := range line {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			} else {
				cur.WriteRune(r)
			}
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == '#' && !inWord:
			return words
		case r == ' ' || r == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	require.Zero(t, quote, "unbalanced quote in %q", line)
	if inWord {
		words = append(words, cur.String())
	}
	return words
}

// parseOnly copies cmds with actions that only record what the real flag
// parser made of the arguments.
func parseOnly(cmds []*cli.Command, got **cli.Context) []*cli.Command {
	out := make([]*cli.Command, len(cmds))
	for i, c := range cmds {
		cp := *c
		cp.Flags = append([]cli.Flag(nil), c.Flags...)
		cp.Subcommands = parseOnly(c.Subcommands, got)
		if cp.Action != nil {
			cp.Action = func(c *cli.Context) error { *got = c; return nil }
		}
		out[i] = &cp
	}
	return out
}

// TestReadmeCommandsParse parses every iklim command of the README with the
// real CLI flag parser, and runs the play commands with --syntax-check and
// the commands that contact no host as they are.
func TestReadmeCommandsParse(t *testing.T) {
	cmds, env, _ := readme(t)
	// What the README leaves to the reader's setting: the inventory of a
	// command without -i, and the CI job's secret store for the iklim.co
	// pipeline (the README: "secrets passed as IKLIM_VAR_* environment
	// variables").
	env = append(env, "IKLIM_INVENTORY=inventories/prod.hcl", "IKLIM_VAR_registry_password=x",
		"IKLIM_VAR_tsig_secret=eA==", "IKLIM_VAR_cert_dir="+acmeDir(t))
	require.GreaterOrEqual(t, len(cmds), 15, "the README's commands were not found")
	for _, rc := range cmds {
		t.Run(strings.Join(rc.argv, " "), func(t *testing.T) {
			var got *cli.Context
			code := run(append([]string{"iklim"}, rc.argv...), parseOnly(commands(), &got)...)
			require.Equal(t, 0, code, "README.md:%d: iklim %v does not parse", rc.line, rc.argv)
			require.NotNil(t, got, "README.md:%d: no command ran", rc.line)
			if rc.placeholder {
				return
			}
			switch rc.argv[0] {
			case "play":
				require.Equal(t, 1, got.NArg(), "README.md:%d: play takes one PLAYBOOK; got %v", rc.line, got.Args().Slice())
				_, err := parseExtraVars(got.StringSlice("extra-vars"))
				require.NoError(t, err)
				args := rc.argv
				if !got.Bool("list-hosts") && !got.Bool("list-steps") {
					args = append(append([]string(nil), args...), "--syntax-check")
				}
				stdout, stderr, code := iklimIn(t, filepath.Join("..", ".."), env, args...)
				require.Equal(t, 0, code, "README.md:%d: iklim %v:\n%s%s", rc.line, args, stdout, stderr)
			case "modules", "version", "completion", "inventory":
				stdout, stderr, code := iklimIn(t, filepath.Join("..", ".."), env, rc.argv...)
				require.Equal(t, 0, code, "README.md:%d: iklim %v:\n%s%s", rc.line, rc.argv, stdout, stderr)
				require.NotEmpty(t, stdout)
			}
		})
	}
}

// TestReadmeHCLParses parses every HCL block of the README; inventory
// blocks must also load as inventories.
func TestReadmeHCLParses(t *testing.T) {
	_, _, blocks := readme(t)
	require.GreaterOrEqual(t, len(blocks), 2, "the README's HCL blocks were not found")
	for line, src := range blocks {
		_, diags := hclsyntax.ParseConfig([]byte(src), "README.md", hcl.Pos{Line: line, Column: 1})
		require.False(t, diags.HasErrors(), "README.md:%d: %s", line, diags.Error())
		if strings.Contains(src, "host \"") && !strings.Contains(src, "play \"") {
			_, diags := inventories.Parse([]byte(src), "README.md")
			assert.False(t, diags.HasErrors(), "README.md:%d: not an inventory: %s", line, diags.Error())
		}
	}
}

// acmeDir holds what SWAG's ACME client would have written for the
// README's iklim.co pipeline: a certificate for api.<domain>, and its key.
func acmeDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	name := "api.lab.iklim.test" // the playbook's default domain
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(90 * 24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "fullchain.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "privkey.pem"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600))
	return dir
}
