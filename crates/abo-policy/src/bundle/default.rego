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

# The rules over every file below are written for regorus's cost: a call of a function of this
# package costs it about as much as twenty built-in calls, so the rules call the functions only on
# the few paths a built-in test (a prefix, a suffix, a set lookup) leaves, and sets of paths are
# intersected, not searched. The functions stay, for user rules and for hand-written inputs.
file_paths := {f.path | some f in files}

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

# Each built-in rule below reports violations under its name; `safety.rules` sets what a rule's
# violations get: `deny`, `needs_approval` or `off`. Without it, each has its default (the
# behaviour before rules were configurable). Secrets and abo's own files are not among them.
default_levels := {
	"forbidden_paths": "deny",
	"allowed_paths": "deny",
	"forbidden_patterns": "deny",
	"max_diff_lines": "deny",
	"max_diff_bytes": "deny",
	"ci_config": "deny",
	"env_files": "deny",
	"binary_files": "needs_approval",
	"symlink_escape": "needs_approval",
	"out_of_scope": "needs_approval",
	"dependencies": "needs_approval",
	"gate_failed": "deny",
	"tests_fewer": "deny",
	"tests_removed": "deny",
	"tests_skipped": "deny",
	"tests_weakened": "deny",
	"test_config": "needs_approval",
	"changed_coverage": "needs_approval",
	"new_findings": "deny",
	"tests_required": "needs_approval",
	"mutation_score": "needs_approval",
	"quarantined": "off",
}

level(rule) := object.get(object.get(cfg, "rules", {}), rule, object.get(default_levels, rule, "deny"))

deny contains v.msg if {
	some v in violation
	level(v.rule) == "deny"
}

require_approval contains v.msg if {
	some v in violation
	level(v.rule) == "needs_approval"
}

# Paths the configuration forbids.
violation contains {"rule": "forbidden_paths", "msg": msg} if {
	classified == true
	some f in files
	some pat in f.forbidden
	msg := sprintf("%s matches safety.forbidden_paths %s", [f.path, pat])
}

violation contains {"rule": "forbidden_paths", "msg": msg} if {
	classified != true
	some f in files
	some pat in forbidden_of(f)
	msg := sprintf("%s matches safety.forbidden_paths %s", [f.path, pat])
}

# Paths outside the allowed ones.
violation contains {"rule": "allowed_paths", "msg": msg} if {
	some f in files
	object.get(f, "allowed", null) != true
	outside_allowed(f)
	msg := sprintf("%s is outside safety.allowed_paths", [f.path])
}

# Text the configuration forbids in what the change adds.
violation contains {"rule": "forbidden_patterns", "msg": msg} if {
	some pat in forbidden_patterns
	contains(object.get(input, ["change", "added_text"], ""), pat)
	msg := sprintf("the change adds forbidden text %q (safety.forbidden_patterns)", [pat])
}

# Changes too large to review.
violation contains {"rule": "max_diff_lines", "msg": msg} if {
	max := object.get(cfg, "max_diff_lines", 0)
	max > 0
	lines_changed > max
	msg := sprintf("the change has %d changed lines, more than safety.max_diff_lines (%d)", [lines_changed, max])
}

# Changes too large to review by their bytes: one 3 MB line is one changed line. 0 turns it off.
violation contains {"rule": "max_diff_bytes", "msg": msg} if {
	max := object.get(cfg, "max_diff_bytes", 1048576)
	max > 0
	added := object.get(input, ["change", "bytes_added"], 0)
	added > max
	msg := sprintf("the change adds %d bytes, more than safety.max_diff_bytes (%d)", [added, max])
}

# CI configuration is not changed by an agent (rule `ci_config`).
ci_dirs := [".github/workflows/", ".github/actions/", ".circleci/", ".buildkite/"]

ci_files := {
	"action.yml", "action.yaml", "azure-pipelines.yml", "azure-pipelines.yaml", ".travis.yml",
	"bitbucket-pipelines.yml", ".drone.yml", "appveyor.yml", ".appveyor.yml", ".gitlab-ci.yml",
	"Jenkinsfile",
}

ci_path(p) if ci_files[p]

ci_path(p) if {
	some d in ci_dirs
	startswith(p, d)
}

# Every CI directory starts with a dot: other paths are CI only by name.
ci_changed := (file_paths & ci_files) | {p |
	some p in file_paths
	startswith(p, ".")
	ci_path(p)
}

violation contains {"rule": "ci_config", "msg": msg} if {
	some p in ci_changed
	msg := sprintf("%s is CI configuration", [p])
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

protected_dirs := [p | some p in protected_paths; endswith(p, "/")]

protected_changed := (file_paths & {p | some p in protected_paths}) | {path |
	some d in protected_dirs
	some path in file_paths
	startswith(path, d)
}

deny contains protected_reason(path) if {
	object.get(cfg, "protected", "deny") != "needs_approval"
	some path in protected_changed
}

require_approval contains protected_reason(path) if {
	object.get(cfg, "protected", "deny") == "needs_approval"
	some path in protected_changed
}

# Environment files hold secrets (the secrets found in any file always deny, below).
violation contains {"rule": "env_files", "msg": msg} if {
	some f in files
	contains(f.path, ".env")
	startswith(basename(f.path), ".env")
	msg := sprintf("%s is an environment file", [f.path])
}

# Secrets found in the change (their values are never in the input).
deny contains msg if {
	some s in object.get(input, "secrets", [])
	msg := sprintf("%s:%d adds a secret (%s)", [s.path, s.line, s.rule])
}

# Binary files cannot be reviewed as text.
violation contains {"rule": "binary_files", "msg": msg} if {
	some f in files
	f.binary
	msg := sprintf("%s is a binary file", [f.path])
}

# A symbolic link out of the repository (an absolute target, or `..` above its root): whatever
# reads through it (a gate, a later task's agent) reads outside the worktree.
violation contains {"rule": "symlink_escape", "msg": msg} if {
	some f in files
	f.status != "deleted"
	object.get(f, "escapes", false)
	msg := sprintf("%s is a symbolic link out of the repository (to %s)", [f.path, object.get(f, "symlink_target", "?")])
}

# Changes outside the task's declared scope.
violation contains {"rule": "out_of_scope", "msg": msg} if {
	some f in files
	object.get(f, "in_scope", null) != true
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

manifest(p) if manifests[basename(p)]

# `requirements-dev.txt`, `constraints.txt`, `requirements/dev.txt`, pip-tools' `.in` files, and
# any `*.lock` (flake.lock, Podfile.lock, mix.lock...).
manifest(p) if {
	some prefix in ["requirements", "constraints"]
	startswith(lower(basename(p)), prefix)
	some ext in ["txt", "in"]
	extension(p) == ext
}

manifest(p) if {
	"requirements" in array.slice(split(p, "/"), 0, count(split(p, "/")) - 1)
	extension(p) == "txt"
}

manifest(p) if extension(p) == "lock"

# A manifest is named in `manifests` or ends in `.txt`, `.in` or `.lock` (any case).
maybe_manifest(p) if {
	lp := lower(p)
	some ext in [".txt", ".in", ".lock"]
	endswith(lp, ext)
}

# abo classifies each file of its inputs (`sensitive`, `low`, `manifest`: what the functions here
# say of its path) and says so (`input.change.classified`): the rules read those facts instead of
# calling the functions on every file. An input written by hand is classified here.
classified := object.get(input, ["change", "classified"], false)

dependencies_changed contains f.path if {
	classified == true
	some f in files
	f.manifest == true
}

dependencies_changed contains p if {
	classified != true
	some p in file_paths
	parts := split(p, "/")
	manifests[parts[count(parts) - 1]]
}

dependencies_changed contains p if {
	classified != true
	some p in file_paths
	maybe_manifest(p)
	manifest(p)
}

violation contains {"rule": "dependencies", "msg": msg} if {
	some p in dependencies_changed
	msg := sprintf("%s changes dependencies", [p])
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

# `auth_token.rs`: the part before the first `_` is a word (no word has a `_` of its own).
sensitive(p) if {
	some seg in lower_segments(p)
	words := split(seg, "_")
	count(words) > 1
	sensitive_words[words[0]]
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

# Files that tools run as code wherever they are (pytest's conftest.py, Sphinx's conf.py), and
# manifests, are neither docs nor tests.
runs_as_code(p) if basename(p) in {"conftest.py", "conf.py"}

low_file(f) if {
	doc_file(f.path)
	not runs_as_code(f.path)
	not manifest(f.path)
}

low_file(f) if {
	test_file(f.path)
	not runs_as_code(f.path)
	not manifest(f.path)
}

critical if {
	classified == true
	some f in files
	f.sensitive == true
}

critical if {
	classified != true
	some f in files
	sensitive(f.path)
}

high if lines_changed > 200

low if {
	classified == true
	count(files) > 0
	every f in files {
		f.low == true
	}
}

low if {
	classified != true
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

# Quality: what the gates measured (`input.tests`, `coverage`, `findings`, `metrics`), the same
# gates on the run's base (`input.baseline`), and what the change does to its tests. The
# thresholds are `safety.quality` (`data.abo.config.quality`).
quality := object.get(cfg, "quality", {})

threshold(key, dflt) := object.get(quality, key, dflt)

tests := object.get(input, "tests", {})

baseline := object.get(input, "baseline", {})

# A gate that exited 0 with failed tests in its reports: abo believes the failures.
violation contains {"rule": "gate_failed", "msg": msg} if {
	some p in object.get(tests, "problems", [])
	msg := sprintf("a gate's report: %s", [p])
}

# Fewer tests ran than on the base.
violation contains {"rule": "tests_fewer", "msg": msg} if {
	is_object(baseline)
	before := object.get(baseline, ["tests", "run"], null)
	after := object.get(tests, "run", null)
	before != null
	after != null
	after < before
	msg := sprintf("%d tests ran, %d on the base", [after, before])
}

# A test removed: by the diff (its definition gone, not moved), or by the reports (run on the base,
# absent now).
violation contains {"rule": "tests_removed", "msg": msg} if {
	some name in object.get(tests, "removed", [])
	msg := sprintf("the change removes the test %s", [name])
}

violation contains {"rule": "tests_removed", "msg": msg} if {
	some path in object.get(tests, "deleted_files", [])
	msg := sprintf("the change deletes the test file %s", [path])
}

# A test newly skipped: a skip marker added, or skipped now and run on the base.
violation contains {"rule": "tests_skipped", "msg": msg} if {
	some s in object.get(tests, "newly_skipped", [])
	msg := sprintf("the change skips a test: %s", [s])
}

# A weakened test file: assertions removed (more than added), stubbed, monkeypatched or vacuous.
violation contains {"rule": "tests_weakened", "msg": msg} if {
	some w in object.get(tests, "weakened", [])
	w.assertions_removed > w.assertions_added
	msg := sprintf("%s loses assertions (%d removed, %d added)", [w.path, w.assertions_removed, w.assertions_added])
}

violation contains {"rule": "tests_weakened", "msg": msg} if {
	some w in object.get(tests, "weakened", [])
	some line in w.stubbed
	msg := sprintf("%s stubs an assertion: %s", [w.path, line])
}

violation contains {"rule": "tests_weakened", "msg": msg} if {
	some w in object.get(tests, "weakened", [])
	some line in w.vacuous
	msg := sprintf("%s asserts a constant: %s", [w.path, line])
}

# Test configuration or the scripts the gates run.
violation contains {"rule": "test_config", "msg": msg} if {
	some path in object.get(tests, "config_changed", [])
	msg := sprintf("%s configures the tests or a gate", [path])
}

# Coverage of the lines the change adds, under `quality.changed_lines` (percent).
violation contains {"rule": "changed_coverage", "msg": msg} if {
	pct := object.get(input, ["coverage", "changed_lines"], null)
	pct != null
	min := threshold("changed_lines", 80)
	pct < min
	msg := sprintf("%v%% of the changed lines are covered, under safety.quality.changed_lines (%v%%)", [pct, min])
}

# Overall coverage under `quality.min_coverage` (0: none asked).
violation contains {"rule": "changed_coverage", "msg": msg} if {
	pct := object.get(input, ["coverage", "lines"], null)
	pct != null
	min := threshold("min_coverage", 0)
	pct < min
	msg := sprintf("coverage is %v%%, under safety.quality.min_coverage (%v%%)", [pct, min])
}

severity_rank := {"none": 0, "note": 1, "warning": 2, "error": 3}

# A new finding at or above `quality.finding_severity`.
violation contains {"rule": "new_findings", "msg": msg} if {
	some f in object.get(input, "findings", [])
	f.new
	object.get(severity_rank, f.level, 2) >= object.get(severity_rank, threshold("finding_severity", "error"), 3)
	msg := sprintf("%s:%d: new %s finding %s", [f.path, f.line, f.level, f.rule])
}

# Source changed with no test changed, for the task types that require tests, in a repository
# whose gates measured tests (without a measured suite there is none to require). A change that
# makes the base's failing tests pass, or whose added lines the tests cover, has its tests.
changed_lines_covered if {
	pct := object.get(input, ["coverage", "changed_lines"], null)
	pct != null
	pct >= threshold("changed_lines", 80)
}

violation contains {"rule": "tests_required", "msg": msg} if {
	object.get(tests, "measured", false)
	count(object.get(tests, "fixed", [])) == 0
	not changed_lines_covered
	task_type := object.get(input, ["task", "type"], "")
	task_type in threshold("require_tests", ["code", "refactor"])
	count(object.get(tests, "source_files_changed", [])) > 0
	count(object.get(tests, "test_files_changed", [])) == 0
	msg := sprintf("a %s task changes source and no test", [task_type])
}

# Mutation score (`metrics.mutation_score`) under `quality.min_mutation_score`.
violation contains {"rule": "mutation_score", "msg": msg} if {
	score := object.get(input, ["metrics", "mutation_score"], null)
	score != null
	min := threshold("min_mutation_score", 60)
	score < min
	msg := sprintf("the mutation score is %v%%, under safety.quality.min_mutation_score (%v%%)", [score, min])
}

# Failures of quarantined (known flaky) tests: listed in `tests.quarantined` and in the gate's
# event; `off` by default (that is what quarantine asks), a rule to tighten.
violation contains {"rule": "quarantined", "msg": msg} if {
	some name in object.get(tests, "quarantined", [])
	msg := sprintf("the quarantined test %s failed (retried and reported)", [name])
}
