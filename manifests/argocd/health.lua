-- ArgoCD health check for kaito.sh/Workspace (Lua 5.1, as ArgoCD's gopher-lua runs it).
--
-- Healthy     WorkspaceReady (inference) or WorkspaceSucceeded (tuning) is True and the
--             status describes the current generation.
-- Degraded    a condition is False with a failure reason (quota, image pull, OOM, crash
--             loop, failed job, ...); the message is that condition's own message.
-- Progressing anything else, including no status yet or a status for an older generation.
--
-- The source of truth is this file; manifests/argocd/argocd-cm.yaml embeds it verbatim
-- (tests/e2e/test_argocd.py checks that the two agree).
local hs = {}

-- Reason words that mean "this will not get better by waiting".
local failure_words = {
  "Fail", "Error", "Quota", "BackOff", "OOM", "CrashLoop", "Unschedulable",
  "Invalid", "Denied", "Insufficient", "Unavailable", "NotSupported", "Forbidden",
  "Exceeded", "Unauthorized", "Terminated"
}

-- Reasons that contain such a word but only mean "not yet" (a model still loading).
local transient = { ProbeFailing = true, PodPending = true, AwaitingReconciliation = true }

local function is_failure(reason)
  if reason == nil or transient[reason] then
    return false
  end
  for _, word in ipairs(failure_words) do
    if string.find(reason, word, 1, true) ~= nil then
      return true
    end
  end
  return false
end

local function describe(c)
  local text = c.type or "Condition"
  if c.reason ~= nil and c.reason ~= "" then
    text = text .. " (" .. c.reason .. ")"
  end
  if c.message ~= nil and c.message ~= "" then
    text = text .. ": " .. c.message
  end
  return text
end

if obj.status == nil or obj.status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the reconciler to report status"
  return hs
end

local generation = obj.metadata and obj.metadata.generation

-- A status (or a condition) written for an older generation says nothing about this one.
local function stale(observed)
  return generation ~= nil and observed ~= nil and observed < generation
end

if stale(obj.status.observedGeneration) then
  hs.status = "Progressing"
  hs.message = "Status is for generation " .. obj.status.observedGeneration ..
    ", the Workspace is at " .. generation
  return hs
end

local by_type = {}
for _, c in ipairs(obj.status.conditions) do
  if c.type ~= nil then
    by_type[c.type] = c
  end
end

for _, name in ipairs({"WorkspaceReady", "WorkspaceSucceeded"}) do
  local c = by_type[name]
  if c ~= nil and c.status == "True" and not stale(c.observedGeneration) then
    hs.status = "Healthy"
    hs.message = c.message or name
    return hs
  end
end

for _, c in ipairs(obj.status.conditions) do
  if c.status == "False" and is_failure(c.reason) and not stale(c.observedGeneration) then
    hs.status = "Degraded"
    hs.message = describe(c)
    return hs
  end
end

hs.status = "Progressing"
hs.message = "Waiting for the Workspace to become ready"
for _, c in ipairs(obj.status.conditions) do
  if stale(c.observedGeneration) then
    hs.message = (c.type or "Condition") .. " was reported for generation " .. c.observedGeneration ..
      ", the Workspace is at " .. generation
    break
  end
  if c.status ~= "True" then
    hs.message = describe(c)
    break
  end
end
return hs
