package android.content.pm;
public abstract class PackageManager {
    public static class NameNotFoundException extends Exception {}
    @Deprecated
    public abstract PackageInfo getPackageInfo(String packageName, int flags) throws NameNotFoundException;
}
