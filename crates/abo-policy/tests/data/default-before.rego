# abo's default policy bundle: it enforces the `safety` section of abo.yml (data.abo.config).
# Files in `safety.policy_dir` add rules to this same package.
package abo

cfg := object.get(data, ["abo", "config"], {})

forbidden_paths := object.get(cfg, "forbidden_paths", [])

allowed_paths := object.get(cfg, "allowed_paths", [])

forbidden_patterns := object.get(cfg, "forbidden_patterns", [])

files := object.get(input, ["change", "files"], [])

task_paths := object.get(input, ["task", "paths"], [])

lines_changed := object.get(input, ["change", "lines_added"], 0) + object.get(input, ["change", "lines_removed"], 0)

matches_any(patterns, path) if {
	some p in patterns
	glob.match(p, ["/"], path)
}

basename(path) := b if {
	parts := split(path, "/")
	b := parts[count(parts) - 1]
}

# abo computes each file's glob facts (`forbidden`, `allowed`, `in_scope`) from the configuration:
# matching them here would compile every glob for every file. A hand-written input without the
# facts is matched with glob.match.
forbidden_of(f) := f.forbidden if {
	f.forbidden
} else := [pat | some pat in forbidden_paths; glob.match(pat, ["/"], f.path)]

fact(f, key) := object.get(f, key, null)

outside_allowed(f) if fact(f, "allowed") == false

outside_allowed(f) if {
	fact(f, "allowed") == null
	count(allowed_paths) > 0
	not matches_any(allowed_paths, f.path)
}

outside_scope(f) if fact(f, "in_scope") == false

outside_scope(f) if {
	fact(f, "in_scope") == null
	count(task_paths) > 0
	not matches_any(task_paths, f.path)
}

# Paths the configuration forbids.
deny contains msg if {
	some f in files
	some pat in forbidden_of(f)
	msg := sprintf("%s matches safety.forbidden_paths %s", [f.path, pat])
}

# Paths outside the allowed ones.
deny contains msg if {
	some f in files
	outside_allowed(f)
	msg := sprintf("%s is outside safety.allowed_paths", [f.path])
}

# Text the configuration forbids in what the change adds.
deny contains msg if {
	some pat in forbidden_patterns
	contains(object.get(input, ["change", "added_text"], ""), pat)
	msg := sprintf("the change adds forbidden text %q (safety.forbidden_patterns)", [pat])
}

# Changes too large to review.
deny contains msg if {
	max := object.get(cfg, "max_diff_lines", 0)
	max > 0
	lines_changed > max
	msg := sprintf("the change has %d changed lines, more than safety.max_diff_lines (%d)", [lines_changed, max])
}

# CI configuration is never changed by an agent.
ci_path(p) if startswith(p, ".github/workflows/")

ci_path(p) if p == ".gitlab-ci.yml"

ci_path(p) if startswith(p, ".circleci/")

ci_path(p) if startswith(p, ".buildkite/")

ci_path(p) if p == "Jenkinsfile"

deny contains msg if {
	some f in files
	ci_path(f.path)
	msg := sprintf("%s is CI configuration", [f.path])
}

# abo's own files: its configuration, the policy, the run's backlog and `.abo/`. A change to them
# would rewrite the rules later runs go by (`sandbox: { mode: off }`, a policy that allows all).
# abo lists the run's (`protected_paths`, relative to the root; a directory ends in `/`); the
# default configuration file and abo's own directory are protected whatever the input says.
protected_paths := array.concat(["abo.yml", ".abo/"], object.get(cfg, "protected_paths", []))

protected(path) if {
	some p in protected_paths
	path == p
}

protected(path) if {
	some p in protected_paths
	endswith(p, "/")
	startswith(path, p)
}

protected_reason(path) := sprintf("%s is abo's own configuration, policy or backlog (safety.protected)", [path])

deny contains protected_reason(f.path) if {
	object.get(cfg, "protected", "deny") != "needs_approval"
	some f in files
	protected(f.path)
}

require_approval contains protected_reason(f.path) if {
	object.get(cfg, "protected", "deny") == "needs_approval"
	some f in files
	protected(f.path)
}

# Environment files hold secrets.
deny contains msg if {
	some f in files
	startswith(basename(f.path), ".env")
	msg := sprintf("%s is an environment file", [f.path])
}

# Secrets found in the change (their values are never in the input).
deny contains msg if {
	some s in object.get(input, "secrets", [])
	msg := sprintf("%s:%d adds a secret (%s)", [s.path, s.line, s.rule])
}

# Binary files cannot be reviewed as text.
require_approval contains msg if {
	some f in files
	f.binary
	msg := sprintf("%s is a binary file", [f.path])
}

# A symbolic link out of the repository (an absolute target, or `..` above its root): whatever
# reads through it (a gate, a later task's agent) reads outside the worktree.
require_approval contains msg if {
	some f in files
	f.status != "deleted"
	object.get(f, "escapes", false)
	msg := sprintf("%s is a symbolic link out of the repository (to %s)", [f.path, object.get(f, "symlink_target", "?")])
}

# Changes outside the task's declared scope.
require_approval contains msg if {
	some f in files
	outside_scope(f)
	msg := sprintf("%s is outside the task's paths", [f.path])
}

# Dependency manifests and lockfiles.
manifests := {
	"Cargo.toml", "Cargo.lock", "package.json", "package-lock.json", "yarn.lock", "pnpm-lock.yaml",
	"go.mod", "go.sum", "requirements.txt", "pyproject.toml", "poetry.lock", "uv.lock", "Pipfile",
	"Pipfile.lock", "Gemfile", "Gemfile.lock", "composer.json", "composer.lock", "pom.xml",
	"build.gradle", "build.gradle.kts",
}

require_approval contains msg if {
	some f in files
	manifests[basename(f.path)]
	msg := sprintf("%s changes dependencies", [f.path])
}

# Risk: low for docs, comments and tests only; critical for auth and security code; high for
# large changes; medium otherwise.
# Path classes use string builtins, not regexes: regorus compiles a regex on every call.
lower_segments(p) := split(lower(p), "/")

sensitive_words := {"auth", "authn", "authz", "security", "crypto", "secret", "secrets", "permission", "permissions", "login", "session"}

# (An index into a call's result, `split(seg, ".")[0]`, makes regorus build and drop an error on
# every evaluation: the parts are named first.)
sensitive(p) if {
	some seg in lower_segments(p)
	parts := split(seg, ".")
	sensitive_words[parts[0]]
}

sensitive(p) if {
	some seg in lower_segments(p)
	some w in sensitive_words
	startswith(seg, concat("", [w, "_"]))
}

doc_dirs := {"doc", "docs"}

doc_exts := {"md", "rst", "txt", "adoc"}

doc_names := {"README", "CHANGELOG", "LICENSE", "CONTRIBUTING"}

extension(p) := e if {
	parts := split(basename(p), ".")
	count(parts) > 1
	e := lower(parts[count(parts) - 1])
}

doc_file(p) if doc_exts[extension(p)]

doc_file(p) if {
	some seg in array.slice(split(p, "/"), 0, count(split(p, "/")) - 1)
	doc_dirs[seg]
}

doc_file(p) if {
	some n in doc_names
	startswith(basename(p), n)
}

testing_dirs := {"test", "tests", "spec", "__tests__"}

test_file(p) if {
	some seg in array.slice(split(p, "/"), 0, count(split(p, "/")) - 1)
	testing_dirs[seg]
}

test_file(p) if startswith(basename(p), "test_")

test_file(p) if contains(basename(p), "_test.")

test_file(p) if contains(basename(p), ".test.")

test_file(p) if contains(basename(p), ".spec.")

low_file(f) if doc_file(f.path)

low_file(f) if test_file(f.path)

critical if {
	some f in files
	sensitive(f.path)
}

high if lines_changed > 200

low if {
	count(files) > 0
	every f in files {
		low_file(f)
	}
}

low if object.get(input, ["change", "comments_only"], false)

default risk := "medium"

risk := "critical" if critical

risk := "high" if {
	not critical
	high
}

risk := "low" if {
	not critical
	not high
	low
}
