package android.widget;
public class TextView extends android.view.View {
    public CharSequence getText() { return null; }
    public final void setText(CharSequence text) {}
}
